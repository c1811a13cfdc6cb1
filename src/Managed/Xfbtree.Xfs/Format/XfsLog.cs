using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Xfbtree.Xfs.Format;

/// <summary>State of the internal log.</summary>
public enum LogState
{
    /// <summary>The newest log record is an unmount record (or the log was never written).</summary>
    Clean,
    /// <summary>The newest record is not an unmount record, or log_incompat features are set: mount would replay it.</summary>
    Dirty,
    /// <summary>The state could not be determined (external log, unreadable log).</summary>
    Unknown,
}

/// <summary>Result of <see cref="XfsLog.Inspect"/>.</summary>
public readonly record struct LogInspection(LogState State, string Detail);

/// <summary>
/// The clean-log test of docs/xfs-format.md §8.4: find the newest record header (highest cycle, then highest block) in
/// the internal log and check that it is an unmount record. The head is found by a binary search on the cycle
/// number stamped in the first word of every 512-byte log block (blocks before the head carry the current cycle),
/// then a bounded backward search for the header; when the log does not have that shape every block is scanned.
/// </summary>
internal static class XfsLog
{
    const uint HeaderMagic = 0xFEEDBABE;
    const int BB = 512;

    /// <summary>Inspects the log of the image open as <paramref name="file"/>.</summary>
    public static LogInspection Inspect(SafeFileHandle file, XfsGeometry geo)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(geo);
        var sb = geo.Superblock;
        if (sb.FeaturesLogIncompat != 0) return new(LogState.Dirty, $"log_incompat features 0x{sb.FeaturesLogIncompat:x} are set");
        if (sb.LogStart == 0) return new(LogState.Unknown, "the log is on an external device");
        long start = geo.AgBlockToByte(geo.FsbToAgno(sb.LogStart), geo.FsbToAgbno(sb.LogStart));
        long count = (long)sb.LogBlocks * (geo.BlockSize / BB);
        var log = new LogReader(file, start, count);
        try
        {
            long head = FindNewestHeader(log, out uint cycle);
            if (head < 0) return new(LogState.Clean, "the log holds no records");
            return IsUnmountRecord(log, head)
                ? new(LogState.Clean, $"unmount record at log block {head}, cycle {cycle}")
                : new(LogState.Dirty, $"the newest log record (block {head}, cycle {cycle}) is not an unmount record");
        }
        catch (IOException e)
        {
            return new(LogState.Unknown, "log unreadable: " + e.Message);
        }
    }

    sealed class LogReader(SafeFileHandle file, long start, long count)
    {
        readonly byte[] _one = new byte[BB];
        public long Count => count;

        public ReadOnlySpan<byte> Block(long bb)
        {
            int got = RandomAccess.Read(file, _one, start + bb * BB);
            if (got != BB) throw new IOException($"short read in the log at block {bb}");
            return _one;
        }

        public uint Cycle(long bb)
        {
            var b = Block(bb);
            uint w = BinaryPrimitives.ReadUInt32BigEndian(b);
            return w == HeaderMagic ? BinaryPrimitives.ReadUInt32BigEndian(b[4..]) : w;
        }

        public void Read(long bb, Span<byte> dest)
        {
            int got = RandomAccess.Read(file, dest, start + bb * BB);
            if (got != dest.Length) throw new IOException($"short read in the log at block {bb}");
        }
    }

    static long FindNewestHeader(LogReader log, out uint cycle)
    {
        cycle = 0;
        long n = log.Count;
        if (n == 0) return -1;
        uint c0 = log.Cycle(0);
        if (c0 != 0)
        {
            // Blocks [0, head) carry cycle c0 and [head, n) an older cycle: binary search the boundary.
            long lo = 0, hi = n; // invariant: Cycle(lo) == c0, boundary in (lo, hi]
            while (hi - lo > 1)
            {
                long mid = lo + (hi - lo) / 2;
                if (log.Cycle(mid) == c0) lo = mid; else hi = mid;
            }
            long head = hi;
            // The newest header is the last header with cycle c0 before the head, within one maximal record
            // (header blocks + 256 KiB of data, with slack).
            const long window = 4096;
            if (head == n || log.Cycle(n - 1) != c0)
            {
                for (long bb = head - 1; bb >= 0 && bb >= head - window; bb--)
                {
                    var b = log.Block(bb);
                    if (BinaryPrimitives.ReadUInt32BigEndian(b) == HeaderMagic && BinaryPrimitives.ReadUInt32BigEndian(b[4..]) == c0)
                    {
                        cycle = c0;
                        return bb;
                    }
                }
            }
        }
        return FullScan(log, out cycle);
    }

    static long FullScan(LogReader log, out uint cycle)
    {
        cycle = 0;
        long best = -1;
        var chunk = new byte[1 << 20];
        for (long bb = 0; bb < log.Count; bb += chunk.Length / BB)
        {
            int blocks = (int)Math.Min(chunk.Length / BB, log.Count - bb);
            var span = chunk.AsSpan(0, blocks * BB);
            log.Read(bb, span);
            for (int i = 0; i < blocks; i++)
            {
                var b = span.Slice(i * BB, BB);
                if (BinaryPrimitives.ReadUInt32BigEndian(b) != HeaderMagic) continue;
                uint c = BinaryPrimitives.ReadUInt32BigEndian(b[4..]);
                if (best < 0 || c > cycle || (c == cycle && bb + i > best)) { cycle = c; best = bb + i; }
            }
        }
        return best;
    }

    static bool IsUnmountRecord(LogReader log, long head)
    {
        var h = log.Block(head).ToArray();
        int numLogOps = BinaryPrimitives.ReadInt32BigEndian(h.AsSpan(40));
        if (numLogOps != 1) return false;
        int version = BinaryPrimitives.ReadInt32BigEndian(h.AsSpan(8));
        int size = BinaryPrimitives.ReadInt32BigEndian(h.AsSpan(320));
        long headerBlocks = (version & 2) != 0 && size > 32768 ? (size + 32767) / 32768 : 1;
        long opBlock = (head + headerBlocks) % log.Count;
        var op = log.Block(opBlock);
        byte clientId = op[8], flags = op[9];
        return clientId == 0xAA && (flags & 0x20) != 0;
    }
}
