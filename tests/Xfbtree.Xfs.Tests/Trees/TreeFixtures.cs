using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Numerics;
using Xfbtree.Btree;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Tests.Trees;

/// <summary>
/// Restores the shared fixtures once per test process (zstd | xfs_mdrestore into a temp dir) and runs xfs_db.
/// A missing tool is a loud failure, never a skip.
/// </summary>
internal static class TreeFixtures
{
    public static string FixtureDir => Xfbtree.TestSupport.SharedFolder.Fixtures;

    /// <summary>The shared folder beside the repository.</summary>
    public static string SharedDir => Xfbtree.TestSupport.SharedFolder.Dir;

    public static readonly string[] All = ["fresh-4ag", "proto-small", "aged-small", "aged-medium", "geom-bs1k", "geom-sect4k", "geom-agcount32", "geom-nrext64"];
    static readonly string TempDir = Path.Combine(Path.GetTempPath(), $"xfbtree-trees-{Environment.ProcessId}");
    static readonly ConcurrentDictionary<string, Lazy<string>> Images = new();

    static TreeFixtures()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(TempDir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { } };
    }

    public static string Image(string name) => Images.GetOrAdd(name, n => new Lazy<string>(() => Restore(n))).Value;

    static string Restore(string name)
    {
        RequireTool("zstd");
        RequireTool("xfs_mdrestore");
        Directory.CreateDirectory(TempDir);
        string img = Path.Combine(TempDir, name + ".img");
        string dump = Path.Combine(FixtureDir, name + ".metadump.zst");
        if (!File.Exists(dump)) throw new FileNotFoundException($"fixture {dump} is missing");
        Sh($"zstd -dc '{dump}' | xfs_mdrestore - '{img}'");
        return img;
    }

    public static string Tool(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/usr/sbin", "/sbin", "/usr/bin"]))
        {
            string p = Path.Combine(dir, tool);
            if (File.Exists(p)) return p;
        }
        throw new InvalidOperationException($"required tool '{tool}' is not installed (apt-get install xfsprogs zstd); XFS fixture tests cannot run");
    }

    public static void RequireTool(string tool) => Tool(tool);

    /// <summary>Runs a shell pipeline (paths are quoted by the caller).</summary>
    public static string Sh(string command) => Run("/bin/sh", new[] { "-c", command });

    public static string Run(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', psi.ArgumentList)} failed ({p.ExitCode}): {stderr}");
        return stdout.Result;
    }

    public static string XfsDb(string image, params string[] commands)
        => Run(Tool("xfs_db"), new[] { "-r" }.Concat(commands.SelectMany(c => new[] { "-c", c })).Append(image));

    /// <summary>Leaf records xfs_db btdump prints for the tree whose root address it is given (e.g. "agf 1", "addr rmaproot").</summary>
    public static long BtdumpRecordCount(string image, string header, string addr)
    {
        string text = XfsDb(image, header, addr, "btdump");
        long count = 0;
        bool leaf = false;
        foreach (var line in text.Split('\n'))
        {
            if (line.Contains(" level ", StringComparison.Ordinal) && line.Contains(" block ", StringComparison.Ordinal))
                leaf = line.Contains(" level 0 ", StringComparison.Ordinal);
            else if (leaf && line.Length > 0 && char.IsDigit(line[0]) && line.Contains(":[", StringComparison.Ordinal))
                count++;
        }
        return count;
    }

    /// <summary>Truth rmap records of a fixture: agno → records in key order.</summary>
    public static Dictionary<uint, List<(uint Start, uint Len, ulong Owner, ulong RawOffset)>> Truth(string name)
    {
        string text = Sh($"zstd -dc '{Path.Combine(FixtureDir, name + ".truth.tsv.zst")}'");
        var result = new Dictionary<uint, List<(uint, uint, ulong, ulong)>>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var f = line.Split('\t');
            uint agno = uint.Parse(f[0]);
            ulong raw = ulong.Parse(f[6]) | (f[7] == "1" ? 1UL << 63 : 0) | (f[8] == "1" ? 1UL << 62 : 0) | (f[9].Trim() == "1" ? 1UL << 61 : 0);
            if (!result.TryGetValue(agno, out var list)) result[agno] = list = new();
            list.Add((uint.Parse(f[1]), uint.Parse(f[2]), ulong.Parse(f[4]), raw));
        }
        return result;
    }
}

/// <summary>The few superblock fields the tree tests need, read at their documented offsets.</summary>
internal sealed class FixtureGeometry
{
    public FixtureGeometry(ReadOnlySpan<byte> sb)
    {
        if (BinaryPrimitives.ReadUInt32BigEndian(sb) != 0x58465342) throw new InvalidDataException("not an XFS superblock");
        BlockSize = (int)BinaryPrimitives.ReadUInt32BigEndian(sb[4..]);
        DataBlocks = (long)BinaryPrimitives.ReadUInt64BigEndian(sb[8..]);
        AgBlocks = BinaryPrimitives.ReadUInt32BigEndian(sb[84..]);
        AgCount = BinaryPrimitives.ReadUInt32BigEndian(sb[88..]);
        SectorSize = BinaryPrimitives.ReadUInt16BigEndian(sb[102..]);
        InodeSize = BinaryPrimitives.ReadUInt16BigEndian(sb[104..]);
        InodesPerBlockLog = sb[123];
        AgBlockLog = sb[124];
        RoCompat = BinaryPrimitives.ReadUInt32BigEndian(sb[212..]);
        Incompat = BinaryPrimitives.ReadUInt32BigEndian(sb[216..]);
        Uuid = ((Incompat & 0x4) != 0 ? sb.Slice(248, 16) : sb.Slice(32, 16)).ToArray();
    }

    public int BlockSize { get; }
    public long DataBlocks { get; }
    public uint AgBlocks { get; }
    public uint AgCount { get; }
    public int SectorSize { get; }
    public int InodeSize { get; }
    public int InodesPerBlockLog { get; }
    public int AgBlockLog { get; }
    public uint RoCompat { get; }
    public uint Incompat { get; }
    public byte[] Uuid { get; }
    public bool HasFinobt => (RoCompat & 1) != 0;
    public bool HasRmapbt => (RoCompat & 2) != 0;
    public bool HasReflink => (RoCompat & 4) != 0;
    public bool SparseInodes => (Incompat & 2) != 0;
    public bool Nrext64 => (Incompat & 0x20) != 0;
    public uint AgLength(uint agno) => agno == AgCount - 1 ? (uint)(DataBlocks - (long)agno * AgBlocks) : AgBlocks;
}

/// <summary>
/// Test-only read target over an image file: blocks are read with pread into pinned arrays, CRC32C-checked
/// (done here while the shared XfsCrc lands), then run through the tree's verifier on every read. Optional
/// in-memory byte flips emulate on-disk corruption without copying the image.
/// </summary>
internal sealed unsafe class ImageBlockStore : BtreeBlockStore
{
    readonly Microsoft.Win32.SafeHandles.SafeFileHandle _file;
    readonly FixtureGeometry _geo;
    readonly uint _agno;
    readonly bool _fsbno;
    readonly Dictionary<long, byte[]> _held = new();
    readonly Dictionary<long, int> _holds = new();
    readonly HashSet<long> _dirty = new();
    BtreeBlockVerifier? _lastVerifier;

    public ImageBlockStore(Microsoft.Win32.SafeHandles.SafeFileHandle file, FixtureGeometry geo, uint agno, bool fsbnoPointers = false)
    {
        _file = file;
        _geo = geo;
        _agno = agno;
        _fsbno = fsbnoPointers;
    }

    /// <summary>Write dirty blocks back (CRC recomputed) when their last hold is released.</summary>
    public bool Writable { get; init; }

    /// <summary>daddr → (offset, xor) flips applied after each read.</summary>
    public Dictionary<long, List<(int Offset, byte Xor, bool FixCrc)>> Flips { get; } = new();
    public override int BlockSize => _geo.BlockSize;
    public override bool ChecksCrc => false;
    public int Holds => _holds.Count;

    long Linear(long ptr) => _fsbno ? (ptr >> _geo.AgBlockLog) * _geo.AgBlocks + (ptr & ((1L << _geo.AgBlockLog) - 1)) : (long)_agno * _geo.AgBlocks + ptr;
    public override long PointerToDaddr(long pointer) => Linear(pointer) * (_geo.BlockSize / 512);
    public override bool IsValidPointer(long pointer)
    {
        if (!_fsbno) return pointer >= 1 && pointer < _geo.AgLength(_agno);
        if (pointer < 0) return false;
        long agno = pointer >> _geo.AgBlockLog, agbno = pointer & ((1L << _geo.AgBlockLog) - 1);
        return agno < _geo.AgCount && agbno >= 1 && agbno < _geo.AgLength((uint)agno);
    }

    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        if (!IsValidPointer(pointer)) throw new InvalidOperationException($"engine read invalid pointer {pointer}");
        long daddr = PointerToDaddr(pointer);
        if (!_held.TryGetValue(pointer, out var data))
        {
            data = GC.AllocateArray<byte>(_geo.BlockSize, pinned: true);
            int got = RandomAccess.Read(_file, data, daddr * 512);
            if (got != data.Length) throw new BufferIOException("image", daddr, _geo.BlockSize / 512, "short read");
            int crcOff = verifier.Geometry.CrcOffset;
            if (Flips.TryGetValue(daddr, out var flips))
                foreach (var (off, xor, fix) in flips)
                {
                    data[off] ^= xor;
                    if (fix) BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(crcOff), Crc32C.Compute(data, crcOff));
                }
            if (BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(crcOff)) != Crc32C.Compute(data, crcOff))
                throw new CorruptionException(verifier.Name, daddr, "bad CRC");
            verifier.Verify(data, daddr);
            _held[pointer] = data;
        }
        _lastVerifier = verifier;
        _holds[pointer] = _holds.GetValueOrDefault(pointer) + 1;
        fixed (byte* p = data) return new BtreeBlockRef(data, p, pointer);
    }

    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier) => throw new NotSupportedException("read-only image store");
    public override void Release(in BtreeBlockRef block)
    {
        int h = _holds[block.Pointer] - 1;
        if (h > 0) { _holds[block.Pointer] = h; return; }
        var data = _held[block.Pointer];
        _holds.Remove(block.Pointer);
        _held.Remove(block.Pointer);
        if (!_dirty.Remove(block.Pointer)) return;
        int crcOff = _lastVerifier!.Geometry.CrcOffset;
        BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(crcOff), Crc32C.Compute(data, crcOff));
        _lastVerifier.Verify(data, PointerToDaddr(block.Pointer));
        RandomAccess.Write(_file, data, PointerToDaddr(block.Pointer) * 512);
    }
    public override void MarkDirty(in BtreeBlockRef block)
    {
        if (!Writable) throw new NotSupportedException("read-only image store");
        _dirty.Add(block.Pointer);
    }
    public override void MarkStale(in BtreeBlockRef block) => throw new NotSupportedException("image store cannot free blocks");
}

/// <summary>CRC-32C (Castagnoli) with the 4-byte CRC field taken as zero, as XFS stores it.</summary>
internal static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data, int crcOffset)
    {
        uint crc = Update(~0u, data[..crcOffset]);
        crc = BitOperations.Crc32C(crc, 0u);
        crc = Update(crc, data[(crcOffset + 4)..]);
        return ~crc;
    }

    static uint Update(uint crc, ReadOnlySpan<byte> d)
    {
        int i = 0;
        for (; i + 8 <= d.Length; i += 8) crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(d[i..]));
        for (; i < d.Length; i++) crc = BitOperations.Crc32C(crc, d[i]);
        return crc;
    }
}
