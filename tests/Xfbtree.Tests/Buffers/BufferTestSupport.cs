using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using Xfbtree.Buffers;

namespace Xfbtree.Tests.Buffers;

/// <summary>Temp image files, fixture restore (zstd | xfs_mdrestore; a missing tool fails loudly) and small test verifiers.</summary>
internal static class BufferTestSupport
{
    public static string FixtureDir => Xfbtree.TestSupport.SharedFolder.Fixtures;

    /// <summary>The shared folder beside the repository.</summary>
    public static string SharedDir => Xfbtree.TestSupport.SharedFolder.Dir;

    static readonly string TempDir = Path.Combine(Path.GetTempPath(), $"xfbtree-buffers-{Environment.ProcessId}");
    static readonly ConcurrentDictionary<string, Lazy<string>> Restored = new();

    static BufferTestSupport()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(TempDir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { } };
    }

    /// <summary>A new temp file of <paramref name="bytes"/> bytes; block i (of <paramref name="blockSize"/>) is filled by <see cref="Pattern"/>.</summary>
    public static TempFile NewImage(long bytes, int blockSize = 4096, bool patterned = true)
    {
        Directory.CreateDirectory(TempDir);
        string path = Path.Combine(TempDir, $"img-{Guid.NewGuid():N}.img");
        using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            fs.SetLength(bytes);
            if (patterned)
            {
                var block = new byte[blockSize];
                for (long i = 0; i * blockSize < bytes; i++)
                {
                    Pattern(block, i * (blockSize / 512));
                    fs.Write(block, 0, (int)Math.Min(blockSize, bytes - i * blockSize));
                }
            }
        }
        return new TempFile(path);
    }

    /// <summary>Deterministic contents of the block at <paramref name="daddr"/>: its daddr in every 8 bytes, xor a salt.</summary>
    public static void Pattern(Span<byte> block, long daddr, ulong salt = 0)
    {
        for (int i = 0; i + 8 <= block.Length; i += 8)
            BinaryPrimitives.WriteUInt64LittleEndian(block[i..], (ulong)daddr * 0x9E3779B97F4A7C15UL ^ (ulong)i ^ salt);
    }

    public static bool HasPattern(ReadOnlySpan<byte> block, long daddr, ulong salt = 0)
    {
        Span<byte> expected = stackalloc byte[block.Length];
        Pattern(expected, daddr, salt);
        return block.SequenceEqual(expected);
    }

    /// <summary>Restores a fixture image once per test process.</summary>
    public static string Fixture(string name) => Restored.GetOrAdd(name, n => new Lazy<string>(() => Restore(n))).Value;

    static string Restore(string name)
    {
        string zstd = Tool("zstd"), mdrestore = Tool("xfs_mdrestore");
        string dump = Path.Combine(FixtureDir, name + ".metadump.zst");
        if (!File.Exists(dump)) throw new FileNotFoundException($"fixture {dump} is missing");
        Directory.CreateDirectory(TempDir);
        string img = Path.Combine(TempDir, name + ".img");
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"'{zstd}' -dc '{dump}' | '{mdrestore}' - '{img}'");
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"restoring {dump} failed ({p.ExitCode}): {err}");
        return img;
    }

    public static string Tool(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]))
        {
            if (dir.Length == 0) continue;
            string p = Path.Combine(dir, tool);
            if (File.Exists(p)) return p;
        }
        throw new InvalidOperationException($"required tool '{tool}' is not installed (apt-get install xfsprogs zstd); the buffer fixture tests cannot run");
    }

    public static DiskBufferTarget OpenRw(string path, bool direct = false) => DiskBufferTarget.Open(path, new DiskTargetOptions { ReadOnly = false, Direct = direct });
}

internal sealed class TempFile(string path) : IDisposable
{
    public string Path { get; } = path;
    public void Dispose() { try { File.Delete(Path); } catch (IOException) { } }
}

/// <summary>A test block type: magic "TBLK" at 0, CRC at 4 over the whole buffer, daddr at 8 (a structural check).</summary>
internal sealed class TestBlockVerifier : IBufferVerifier
{
    public const uint Magic = 0x54424C4B;
    public const int CrcOffset = 4;
    public int ReadVerifies;
    public int WritePrepares;
    public string Name => "test block";

    public void VerifyRead(BlockBuffer buffer)
    {
        Interlocked.Increment(ref ReadVerifies);
        var s = buffer.Span;
        if (BinaryPrimitives.ReadUInt32BigEndian(s) != Magic) throw new CorruptionException(Name, buffer.Daddr, "bad magic");
        if (!XfsCrc.Verify(s, CrcOffset)) throw new CorruptionException(Name, buffer.Daddr, "bad CRC");
        if (BinaryPrimitives.ReadInt64BigEndian(s[8..]) != buffer.Daddr) throw new CorruptionException(Name, buffer.Daddr, "daddr mismatch");
    }

    public void PrepareWrite(BlockBuffer buffer)
    {
        Interlocked.Increment(ref WritePrepares);
        var s = buffer.Span;
        if (BinaryPrimitives.ReadUInt32BigEndian(s) != Magic) throw new CorruptionException(Name, buffer.Daddr, "bad magic before write");
        XfsCrc.Update(s, CrcOffset);
    }

    /// <summary>Formats a buffer as a valid test block with a payload byte.</summary>
    public static void Format(Span<byte> s, long daddr, byte payload)
    {
        s.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(s, Magic);
        BinaryPrimitives.WriteInt64BigEndian(s[8..], daddr);
        s[16..].Fill(payload);
        XfsCrc.Update(s, CrcOffset);
    }
}
