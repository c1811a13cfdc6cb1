using System.Buffers.Binary;
using System.Diagnostics;
using Microsoft.Win32.SafeHandles;
using Xfbtree.Buffers;
using Xfbtree.Cli;

namespace Xfbtree.Fuzz;

/// <summary>
/// Target <c>reader</c>: a compact patch list applied to a small real XFS image, then <c>xfbtree rmap check</c> or
/// <c>rmap dump</c>, and <c>rmap dump --source ondisk</c>, run in-process.
/// <para>Base image: built once by <see cref="ReaderBaseImage"/> (mkfs.xfs -m rmapbt=1,reflink=1,finobt=1 with a
/// prototype file: 3 AGs, a directory in btree format, about 500 inodes) and cached in the temp directory; each
/// process works on its own copy, and every run restores the blocks it patched.</para>
/// <para>Input (big-endian): byte 0 flags (bit 0: raw, leave CRCs as patched; otherwise the CRC of every patched
/// superblock, AG header, btree block, inode and directory block is recomputed, so patches reach the parsers; bit 1:
/// check --json; bit 2: dump (the expected records) instead of check; bit 3: --force, skipping the log check), then
/// up to 64 patches: target u16 (below 0x8000: the n-th metadata block of the base image, mod their count; else a raw
/// block number), offset u16 (mod block size), length u8 (mod 16, plus 1), the bytes.</para>
/// <para>Oracles: exit codes 0, 1 and 2 with one-line errors are all expected for damaged images; an exception that is
/// not a documented input problem escapes (<see cref="CommandEnvironment.RethrowInternalErrors"/>) and is a finding, as is
/// more than 1 GiB allocated in one run (unbounded allocation driven by on-disk counts), a hang (afl's -t) and, for the
/// unpatched image, anything but a clean check.</para>
/// </summary>
public static class ReaderTarget
{
    public const int MaxPatches = 64;
    public const long AllocationLimit = 1L << 30;
    static readonly Lazy<ReaderBaseImage> Base = new(ReaderBaseImage.Open);

    /// <summary>The working image (built on first use).</summary>
    public static ReaderBaseImage Image => Base.Value;

    public static FuzzOutcome Run(ReadOnlySpan<byte> input)
    {
        var img = Base.Value;
        var r = new FuzzReader(input);
        int flags = r.U8();
        bool raw = (flags & 1) != 0;
        var patches = new List<(long Block, int Offset, byte[] Bytes)>();
        while (!r.AtEnd && patches.Count < MaxPatches)
        {
            int target = r.U16();
            long block = target < 0x8000 ? img.MetadataBlocks[target % img.MetadataBlocks.Count] : (target - 0x8000) % img.Blocks;
            int offset = r.U16() % img.BlockSize;
            int len = r.U8() % 16 + 1;
            var bytes = r.Bytes(Math.Min(len, img.BlockSize - offset)).ToArray();
            if (bytes.Length > 0) patches.Add((block, offset, bytes));
        }
        img.Apply(patches, fixCrcs: !raw);
        try
        {
            long before = GC.GetTotalAllocatedBytes(precise: false);
            bool damaged = false;
            // One scan per run (the costly part): check (text or JSON) or the expected dump, with or without --force
            // (without it the log is inspected first), then the on-disk dump, which only walks the on-disk rmapbts.
            string[] first = (flags & 4) != 0 ? ["dump"] : (flags & 2) != 0 ? ["check", "--json"] : ["check"];
            if ((flags & 8) != 0) first = [.. first, "--force"];
            foreach (var args in new[] { first, ["dump", "--source", "ondisk", "--force"] })
            {
                var stdout = new StringWriter();
                var stderr = new StringWriter();
                int rc = RmapCommands.Run([.. args, img.WorkPath], new CommandEnvironment(stdout, stderr, false) { RethrowInternalErrors = true });
                string what = $"rmap {string.Join(' ', args)}";
                if (rc is not (RmapCommands.ExitClean or RmapCommands.ExitDamaged or RmapCommands.ExitUnusable))
                    throw new FuzzFindingException($"{what}: exit code {rc}");
                string err = stderr.ToString();
                if (err.Contains("internal error", StringComparison.Ordinal)) throw new FuzzFindingException($"{what}: {err.Trim()}");
                if (patches.Count == 0 && rc != RmapCommands.ExitClean)
                    throw new FuzzFindingException($"{what} on the unpatched base image: exit {rc}: {err.Trim()}");
                damaged |= rc != RmapCommands.ExitClean;
                FuzzTargets.Log?.Invoke($"{what}: exit {rc} {FirstLine(err)}");
                long used = GC.GetTotalAllocatedBytes(precise: false) - before;
                if (used > AllocationLimit) throw new FuzzFindingException($"{what}: {used >> 20} MiB allocated for a {img.Blocks * img.BlockSize >> 20} MiB image (unbounded allocation)");
            }
            return damaged ? FuzzOutcome.CorruptionReported : FuzzOutcome.Ok;
        }
        finally
        {
            img.Restore();
        }
    }

    static string FirstLine(string s)
    {
        int nl = s.IndexOf('\n', StringComparison.Ordinal);
        return nl < 0 ? s : s[..nl];
    }

}

/// <summary>
/// The reader target's base image: made once with mkfs.xfs and a prototype file (deterministic contents and a fixed
/// UUID), cached as <c>$TMP/xfbtree-fuzz-cache/reader-base-VERSION.img</c>, copied per process. Knows the image's
/// metadata blocks (found by magic) so patches can aim at them, patches blocks with CRC fix-up, and restores them.
/// </summary>
public sealed class ReaderBaseImage
{
    /// <summary>Bump when the recipe changes (the cache key).</summary>
    const string Recipe = "v2";
    const string Uuid = "3c0b5d7e-9f1a-4c2b-8d3e-5f6a7b8c9d0e";
    readonly SafeFileHandle _work;
    readonly Dictionary<long, byte[]> _saved = new();

    ReaderBaseImage(string workPath, SafeFileHandle work, int blockSize, int sectorSize, int inodeSize, long blocks, List<long> meta)
    {
        WorkPath = workPath;
        _work = work;
        BlockSize = blockSize;
        SectorSize = sectorSize;
        InodeSize = inodeSize;
        Blocks = blocks;
        MetadataBlocks = meta;
    }

    public string WorkPath { get; }
    public int BlockSize { get; }
    public int SectorSize { get; }
    public int InodeSize { get; }
    public long Blocks { get; }
    /// <summary>Blocks of the base image holding metadata (AG headers, btree blocks, inodes, directory and log blocks), ascending.</summary>
    public IReadOnlyList<long> MetadataBlocks { get; }

    internal static ReaderBaseImage Open()
    {
        string cacheDir = Path.Combine(Path.GetTempPath(), "xfbtree-fuzz-cache");
        Directory.CreateDirectory(cacheDir);
        string basePath = Path.Combine(cacheDir, $"reader-base-{Recipe}.img");
        if (!File.Exists(basePath)) Build(basePath);
        string work = Path.Combine(cacheDir, $"reader-work-{Environment.ProcessId}.img");
        RemoveStaleCopies(cacheDir);
        File.Copy(basePath, work, overwrite: true);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { File.Delete(work); } catch (IOException) { } };
        var handle = File.OpenHandle(work, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        var sb = new byte[512];
        RandomAccess.Read(handle, sb, 0);
        int blockSize = (int)BinaryPrimitives.ReadUInt32BigEndian(sb.AsSpan(4));
        long blocks = (long)BinaryPrimitives.ReadUInt64BigEndian(sb.AsSpan(8));
        int sectorSize = BinaryPrimitives.ReadUInt16BigEndian(sb.AsSpan(102));
        int inodeSize = BinaryPrimitives.ReadUInt16BigEndian(sb.AsSpan(104));
        var meta = new List<long>();
        var block = new byte[blockSize];
        for (long b = 0; b < blocks; b++)
        {
            if (RandomAccess.Read(handle, block, b * blockSize) < blockSize) break;
            if (IsMetadata(block)) meta.Add(b);
        }
        if (meta.Count == 0) throw new InvalidOperationException($"{basePath}: no metadata blocks found");
        return new ReaderBaseImage(work, handle, blockSize, sectorSize, inodeSize, blocks, meta);
    }

    static void RemoveStaleCopies(string cacheDir)
    {
        foreach (var f in Directory.EnumerateFiles(cacheDir, "reader-work-*.img"))
        {
            string id = Path.GetFileNameWithoutExtension(f)["reader-work-".Length..];
            if (int.TryParse(id, out int pid) && pid != Environment.ProcessId && !Directory.Exists($"/proc/{pid}"))
                try { File.Delete(f); } catch (IOException) { }
        }
    }

    static readonly uint[] BlockMagics =
    [
        0x58465342, // XFSB (AG block 0: superblock, AGF, AGI, AGFL)
        0x41423342, 0x41423343, 0x49414233, 0x46494233, 0x524D4233, 0x52334643, 0x424D4133, // btrees
        0x58444233, 0x58444433, 0x58444633, // XDB3 XDD3 XDF3 directory blocks
        0xFEEDBABE, // log record header
    ];

    static bool IsMetadata(ReadOnlySpan<byte> block)
    {
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(block);
        if (Array.IndexOf(BlockMagics, magic) >= 0) return true;
        if (BinaryPrimitives.ReadUInt16BigEndian(block) == 0x494E) return true; // "IN": inode cluster
        ushort daMagic = BinaryPrimitives.ReadUInt16BigEndian(block[8..]);
        return daMagic is 0x3DF1 or 0x3DFF or 0x3EBE; // dir3 leaf1, leafn, da3 node
    }

    /// <summary>Applies patches (saving each touched block first) and, unless raw, recomputes the touched CRCs.</summary>
    public void Apply(List<(long Block, int Offset, byte[] Bytes)> patches, bool fixCrcs)
    {
        if (_saved.Count != 0) throw new InvalidOperationException("previous patches were not restored");
        var changed = new Dictionary<long, byte[]>();
        foreach (var (blockNo, offset, bytes) in patches)
        {
            if (!changed.TryGetValue(blockNo, out var data))
            {
                data = new byte[BlockSize];
                RandomAccess.Read(_work, data, blockNo * BlockSize);
                _saved[blockNo] = data.ToArray();
                changed[blockNo] = data;
            }
            bytes.CopyTo(data.AsSpan(offset));
        }
        foreach (var (blockNo, data) in changed)
        {
            if (fixCrcs) FixCrcs(data);
            RandomAccess.Write(_work, data, blockNo * BlockSize);
        }
    }

    /// <summary>Writes back every block the last <see cref="Apply"/> changed.</summary>
    public void Restore()
    {
        foreach (var (blockNo, data) in _saved) RandomAccess.Write(_work, data, blockNo * BlockSize);
        _saved.Clear();
    }

    void FixCrcs(Span<byte> block)
    {
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(block);
        switch (magic)
        {
            case 0x41423342 or 0x41423343 or 0x49414233 or 0x46494233 or 0x524D4233 or 0x52334643:
                XfsCrc.Update(block, 52);
                return;
            case 0x424D4133:
                XfsCrc.Update(block, 64);
                return;
            case 0x58444233 or 0x58444433 or 0x58444633:
                XfsCrc.Update(block, 4);
                return;
        }
        ushort daMagic = BinaryPrimitives.ReadUInt16BigEndian(block[8..]);
        if (daMagic is 0x3DF1 or 0x3DFF or 0x3EBE)
        {
            XfsCrc.Update(block, 12);
            return;
        }
        // Sector-sized headers (AG block 0) and inodes.
        for (int off = 0; off + SectorSize <= block.Length; off += SectorSize)
        {
            var s = block.Slice(off, SectorSize);
            switch (BinaryPrimitives.ReadUInt32BigEndian(s))
            {
                case 0x58465342: XfsCrc.Update(s, 224); break; // XFSB
                case 0x58414746: XfsCrc.Update(s, 216); break; // XAGF
                case 0x58414749: XfsCrc.Update(s, 312); break; // XAGI
                case 0x5841464C: XfsCrc.Update(s, 32); break;  // XAFL
            }
        }
        for (int off = 0; off + InodeSize <= block.Length; off += InodeSize)
            if (BinaryPrimitives.ReadUInt16BigEndian(block[off..]) == 0x494E) XfsCrc.Update(block.Slice(off, InodeSize), 100);
    }

    // ---------------------------------------------------------------- building the base image

    static string Tool(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/usr/sbin", "/sbin", "/usr/bin"]))
        {
            if (dir.Length == 0) continue;
            string p = Path.Combine(dir, name);
            if (File.Exists(p)) return p;
        }
        throw new InvalidOperationException($"fuzz target reader: '{name}' is not installed (apt-get install xfsprogs); it builds the base image");
    }

    static void Build(string basePath)
    {
        string mkfs = Tool("mkfs.xfs");
        string dir = Path.Combine(Path.GetTempPath(), $"xfbtree-fuzz-proto-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string small = Path.Combine(dir, "small.txt");
            File.WriteAllText(small, "small file\n");
            string mid = Path.Combine(dir, "mid.bin");
            File.WriteAllBytes(mid, Pattern(3 * 4096 + 100, 1));
            string big = Path.Combine(dir, "big.bin");
            File.WriteAllBytes(big, Pattern(3 << 20, 2));
            var proto = new System.Text.StringBuilder();
            proto.Append("/dev/null\n0 0\nd--755 0 0\n");
            proto.Append(System.Globalization.CultureInfo.InvariantCulture, $"big ---644 0 0 {big}\n");
            // Long names make the directory span ~30 blocks interleaved with its files' data: a btree-format directory.
            proto.Append("wide d--755 0 0\n");
            for (int i = 0; i < 420; i++) proto.Append(System.Globalization.CultureInfo.InvariantCulture, $"e{i:D4}{new string('n', 245)} ---644 0 0 {small}\n");
            proto.Append("$\n");
            proto.Append("few d--755 0 0\n");
            for (int i = 0; i < 40; i++) proto.Append(System.Globalization.CultureInfo.InvariantCulture, $"m{i} ---600 1000 1000 {mid}\n");
            proto.Append("sub d--700 0 0\nleaf ---644 0 0 ").Append(small).Append("\n$\n$\n");
            for (int i = 0; i < 12; i++) proto.Append(System.Globalization.CultureInfo.InvariantCulture, $"l{i} l--777 0 0 few/m{i}\n");
            proto.Append("$\n");
            string protoPath = Path.Combine(dir, "proto");
            File.WriteAllText(protoPath, proto.ToString());
            string tmp = basePath + $".{Environment.ProcessId}.tmp";
            using (var f = File.Create(tmp)) f.SetLength(48L << 20);
            var psi = new ProcessStartInfo(mkfs) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[] { "-q", "-f", "-m", $"crc=1,rmapbt=1,reflink=1,finobt=1,uuid={Uuid}", "-d", "agcount=3", "-i", "sparse=1", "-p", protoPath, tmp })
                psi.ArgumentList.Add(a);
            // mkfs.xfs refuses filesystems under 300 MB unless it runs under the XFS test suite's variables.
            psi.Environment["TEST_DIR"] = dir;
            psi.Environment["TEST_DEV"] = tmp;
            psi.Environment["QA_CHECK_FS"] = "1";
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0) throw new InvalidOperationException($"mkfs.xfs failed ({p.ExitCode}) building the reader base image: {err}");
            File.Move(tmp, basePath, overwrite: true);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        uint x = (uint)seed * 2654435761u + 1;
        for (int i = 0; i < length; i++)
        {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            b[i] = (byte)x;
        }
        return b;
    }
}
