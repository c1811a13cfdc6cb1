using Xfbtree.Buffers;

namespace Xfbtree.TestSupport;

/// <summary>How a simulated crash treats the writes made before it.</summary>
public enum CrashModel
{
    /// <summary>The process dies (SIGKILL): every write it made is in the page cache and survives.</summary>
    ProcessKill,

    /// <summary>The machine loses power: only writes covered by a completed fsync survive; the rest are dropped.</summary>
    PowerLoss,
}

/// <summary>Thrown at the simulated crash point: the code under test must not go on as if nothing happened.</summary>
internal sealed class SimulatedCrashException(int write) : Exception($"simulated crash at write {write}")
{
}

/// <summary>
/// A crash right after the k-th write of a disk target, under a <see cref="CrashModel"/>. Under
/// <see cref="CrashModel.PowerLoss"/> writes are held back until a sync passes them to the file (reads still see
/// them, as they would see the page cache); the crash discards whatever was not synced. After the crash nothing
/// more reaches the file. k = 0 never crashes: <see cref="PowerOff"/> then models a power loss after the run.
/// </summary>
internal sealed class CrashAfterWrites(int k, CrashModel model) : DiskWriteInterceptor
{
    readonly Lock _lock = new();
    readonly List<(long Offset, byte[] Bytes)> _unsynced = [];

    /// <summary>Writes the code under test made (including the crashing one).</summary>
    public int Writes { get; private set; }

    /// <summary>Syncs that completed before the crash.</summary>
    public int Syncs { get; private set; }

    public bool Crashed { get; private set; }

    /// <summary>The write count at each completed sync (the barriers of the code under test).</summary>
    public List<int> SyncPoints { get; } = [];

    /// <summary>Writes dropped by the crash or by <see cref="PowerOff"/> (always 0 under <see cref="CrashModel.ProcessKill"/>).</summary>
    public int Lost { get; private set; }

    public override void Write(ReadOnlySpan<byte> bytes, long offset, DiskBufferTarget.DiskPassThrough file)
    {
        lock (_lock)
        {
            if (Crashed)
            {
                return; // the process is gone: code that still runs in this simulation writes nothing
            }
            Writes++;
            if (model == CrashModel.ProcessKill) file.Write(bytes, offset);
            else _unsynced.Add((offset, bytes.ToArray()));
            if (Writes == k)
            {
                CrashNow();
                throw new SimulatedCrashException(Writes);
            }
        }
    }

    public override void Sync(DiskBufferTarget.DiskPassThrough file)
    {
        lock (_lock)
        {
            if (Crashed) return;
            foreach (var (offset, bytes) in _unsynced) file.Write(bytes, offset);
            _unsynced.Clear();
            file.Sync();
            Syncs++;
            SyncPoints.Add(Writes);
        }
    }

    public override void AfterRead(Span<byte> bytes, long offset)
    {
        lock (_lock)
        {
            foreach (var (at, data) in _unsynced)
            {
                long from = Math.Max(at, offset), to = Math.Min(at + data.Length, offset + bytes.Length);
                if (from < to) data.AsSpan((int)(from - at), (int)(to - from)).CopyTo(bytes[(int)(from - offset)..]);
            }
        }
    }

    /// <summary>The power goes off now (after the run): unsynced writes are lost.</summary>
    public void PowerOff()
    {
        lock (_lock) CrashNow();
    }

    void CrashNow()
    {
        Crashed = true;
        Lost += _unsynced.Count;
        _unsynced.Clear();
    }
}
