using System.Buffers.Binary;
using System.Reflection;
using System.Runtime.InteropServices;
using LightningDB;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// LMDB through LightningDB, database on /dev/shm (NoSync, NoMetaSync, WriteMap: an in-memory use like ours).
/// Key = 20-byte big-endian (start block, owner, offset), value = 4-byte block count. Writes commit every
/// 100,000 records. LightningDB's bundled liblmdb needs glibc 2.38, so the system's liblmdb (Debian
/// liblmdb0, installed by bench/setup.sh) is loaded instead.
/// </summary>
public sealed class LmdbPeer : IOrderedMapPeer
{
    private const int RecordsPerTransaction = 100_000;
    private static int resolverInstalled;

    private readonly string directory;
    private readonly LightningEnvironment environment;
    private readonly LightningDatabase database;

    public LmdbPeer(long expectedRecords)
    {
        UseSystemLibrary();
        directory = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), "xfbtree-lmdb-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        environment = new LightningEnvironment(directory, new EnvironmentConfiguration
        {
            MapSize = Math.Max(1L << 30, expectedRecords * 256),
            MaxDatabases = 1,
        });
        try
        {
            environment.Open(EnvironmentOpenFlags.NoSync | EnvironmentOpenFlags.NoMetaSync | EnvironmentOpenFlags.WriteMap
                | EnvironmentOpenFlags.NoReadAhead);
            using LightningTransaction transaction = environment.BeginTransaction();
            database = transaction.OpenDatabase(configuration: new DatabaseConfiguration { Flags = DatabaseOpenFlags.Create });
            transaction.Commit().ThrowOnError();
        }
        catch
        {
            // A half-made environment must be disposed here: LightningDB's finalizer throws (and ends the process) otherwise.
            environment.Dispose();
            Directory.Delete(directory, recursive: true);
            throw;
        }
    }

    public string Name => "LMDB";

    /// <summary>Points LightningDB's "lmdb" imports at the system library (liblmdb.so.0).</summary>
    public static void UseSystemLibrary()
    {
        if (Interlocked.Exchange(ref resolverInstalled, 1) != 0)
        {
            return;
        }
        NativeLibrary.SetDllImportResolver(typeof(LightningEnvironment).Assembly, Resolve);
    }

    /// <summary>True when the system's liblmdb can be loaded.</summary>
    public static bool SystemLibraryPresent()
    {
        foreach (string candidate in Candidates)
        {
            if (NativeLibrary.TryLoad(candidate, out IntPtr handle))
            {
                NativeLibrary.Free(handle);
                return true;
            }
        }
        return false;
    }

    private static readonly string[] Candidates = ["liblmdb.so.0", "/usr/lib/x86_64-linux-gnu/liblmdb.so.0", "/usr/lib/aarch64-linux-gnu/liblmdb.so.0", "liblmdb.so"];

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != "lmdb")
        {
            return IntPtr.Zero;
        }
        foreach (string candidate in Candidates)
        {
            if (NativeLibrary.TryLoad(candidate, out IntPtr handle))
            {
                return handle;
            }
        }
        throw new DllNotFoundException("liblmdb.so.0 not found: run bench/setup.sh (apt-get install liblmdb-dev)");
    }

    public void Insert(ReadOnlySpan<RmapRecord> records) => Put(records, append: false);

    public void BulkLoad(RmapRecord[] sorted) => Put(sorted, append: true);

    private void Put(ReadOnlySpan<RmapRecord> records, bool append)
    {
        Span<byte> key = stackalloc byte[RmapRecord.KeySize];
        Span<byte> value = stackalloc byte[4];
        for (int start = 0; start < records.Length; start += RecordsPerTransaction)
        {
            ReadOnlySpan<RmapRecord> batch = records.Slice(start, Math.Min(RecordsPerTransaction, records.Length - start));
            using LightningTransaction transaction = environment.BeginTransaction();
            if (append)
            {
                // MDB_APPEND: LMDB's bulk path for sorted input (fills pages without splitting them in half).
                using LightningCursor cursor = transaction.CreateCursor(database);
                foreach (RmapRecord record in batch)
                {
                    record.WriteKey(key);
                    BinaryPrimitives.WriteUInt32BigEndian(value, record.BlockCount);
                    cursor.Put(key, value, CursorPutOptions.AppendData).ThrowOnError();
                }
            }
            else
            {
                foreach (RmapRecord record in batch)
                {
                    record.WriteKey(key);
                    BinaryPrimitives.WriteUInt32BigEndian(value, record.BlockCount);
                    transaction.Put(database, key, value, PutOptions.None).ThrowOnError();
                }
            }
            transaction.Commit().ThrowOnError();
        }
    }

    public long Lookup(ReadOnlySpan<RmapRecord> keys)
    {
        Span<byte> key = stackalloc byte[RmapRecord.KeySize];
        long sum = 0;
        using LightningTransaction transaction = environment.BeginTransaction(TransactionBeginFlags.ReadOnly);
        foreach (RmapRecord record in keys)
        {
            record.WriteKey(key);
            (MDBResultCode code, _, MDBValue value) = transaction.Get(database, key);
            if (code == MDBResultCode.Success)
            {
                sum += BinaryPrimitives.ReadUInt32BigEndian(value.AsSpan());
            }
        }
        return sum;
    }

    public long QueryOverlapping(ReadOnlySpan<BlockRange> ranges)
    {
        Span<byte> key = stackalloc byte[RmapRecord.KeySize];
        long found = 0;
        using LightningTransaction transaction = environment.BeginTransaction(TransactionBeginFlags.ReadOnly);
        using LightningCursor cursor = transaction.CreateCursor(database);
        foreach (BlockRange range in ranges)
        {
            uint from = range.FirstPossibleStart;
            new RmapRecord(from, 0, 0, 0).WriteKey(key);
            if (cursor.SetRange(key) != MDBResultCode.Success)
            {
                continue;
            }
            (MDBResultCode code, MDBValue k, MDBValue v) = cursor.GetCurrent();
            while (code == MDBResultCode.Success)
            {
                RmapRecord record = RmapRecord.FromKeyValue(k.AsSpan(), v.AsSpan());
                if (record.StartBlock > range.High)
                {
                    break;
                }
                if (record.StartBlock + record.BlockCount > range.Low)
                {
                    found++;
                }
                (code, k, v) = cursor.Next();
            }
        }
        return found;
    }

    public long Scan()
    {
        long sum = 0;
        using LightningTransaction transaction = environment.BeginTransaction(TransactionBeginFlags.ReadOnly);
        using LightningCursor cursor = transaction.CreateCursor(database);
        (MDBResultCode code, MDBValue k, MDBValue _) = cursor.First();
        while (code == MDBResultCode.Success)
        {
            sum += BinaryPrimitives.ReadUInt32BigEndian(k.AsSpan());
            (code, k, _) = cursor.Next();
        }
        return sum;
    }

    public long Count
    {
        get
        {
            using LightningTransaction transaction = environment.BeginTransaction(TransactionBeginFlags.ReadOnly);
            return transaction.GetEntriesCount(database);
        }
    }

    /// <summary>Pages in use in the map file ((last page + 1) * page size).</summary>
    public long NativeBytes => (environment.Info.LastPageNumber + 1) * environment.EnvironmentStats.PageSize;

    public void Dispose()
    {
        database.Dispose();
        environment.Dispose();
        Directory.Delete(directory, recursive: true);
    }
}
