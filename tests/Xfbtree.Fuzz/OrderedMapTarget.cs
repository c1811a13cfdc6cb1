using System.Runtime.InteropServices;
using Xfbtree.InMemory;

namespace Xfbtree.Fuzz;

/// <summary>An 8-byte record: key + payload.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FuzzRecord8 : IFuzzMapRecord<FuzzRecord8>
{
    public uint Key;
    public uint Value;
    public static FuzzRecord8 Make(uint key, uint value) => new() { Key = key, Value = value };
    public readonly uint MapKey => Key;
    public readonly uint MapValue => Value;
}

/// <summary>Orders <see cref="FuzzRecord8"/> by key.</summary>
public struct FuzzRecord8Comparer : IRecordComparer<FuzzRecord8>, IRecordKeyPrefix<FuzzRecord8>
{
    public readonly int Compare(in FuzzRecord8 x, in FuzzRecord8 y) => x.Key.CompareTo(y.Key);
    /// <summary>A coarse prefix (eight keys share one), so the searches through the sidecars meet equal prefixes.</summary>
    public readonly ulong GetKeyPrefix(in FuzzRecord8 record) => record.Key >> 3;
}

/// <summary>A 64-byte record (the largest key the engine takes): a two-part key and a payload spread over the rest.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FuzzRecord64 : IFuzzMapRecord<FuzzRecord64>
{
    public ulong High;
    public ulong Low;
    public ulong P0, P1, P2, P3, P4, P5;
    public static FuzzRecord64 Make(uint key, uint value) => new()
    {
        High = key >> 6, Low = key & 63, P0 = value, P1 = ~(ulong)value, P2 = key, P3 = (ulong)value << 32, P4 = 0x5A5A5A5A5A5A5A5A, P5 = value ^ key,
    };
    public readonly uint MapKey => (uint)(High << 6 | Low);
    public readonly uint MapValue
    {
        get
        {
            uint v = (uint)P0;
            if (P1 != ~(ulong)v || P2 != MapKey || P3 != (ulong)v << 32 || P4 != 0x5A5A5A5A5A5A5A5A || P5 != (v ^ MapKey))
                throw new FuzzFindingException($"record payload damaged: {High},{Low},{P0:x},{P1:x},{P2:x},{P3:x},{P4:x},{P5:x}");
            return v;
        }
    }
}

/// <summary>Orders <see cref="FuzzRecord64"/> by (High, Low).</summary>
public struct FuzzRecord64Comparer : IRecordComparer<FuzzRecord64>
{
    public readonly int Compare(in FuzzRecord64 x, in FuzzRecord64 y)
    {
        int c = x.High.CompareTo(y.High);
        return c != 0 ? c : x.Low.CompareTo(y.Low);
    }
}

/// <summary>A record type the map target can build from and read back as (key, value).</summary>
public interface IFuzzMapRecord<TSelf> where TSelf : unmanaged
{
    static abstract TSelf Make(uint key, uint value);
    uint MapKey { get; }
    uint MapValue { get; }
}

/// <summary>Orders the keys of the dictionary-shaped map the target mirrors.</summary>
public struct FuzzUIntOrder : IRecordComparer<uint>, IRecordKeyPrefix<uint>
{
    public readonly int Compare(in uint x, in uint y) => x.CompareTo(y);
    public readonly ulong GetKeyPrefix(in uint record) => record;
}

/// <summary>
/// Target <c>orderedmap</c>: an operation script over <see cref="ShmemBTree{TRecord, TComparer}"/> checked against a
/// SortedSet + Dictionary model, with every change mirrored into a <see cref="ShmemMap{TKey, TValue, TComparer}"/>
/// (uint keys and values) checked against the same model. The 8-byte records' comparer and the map's give key prefixes
/// (sidecars beside the blocks, checked against their blocks by the full check); the 64-byte records' do not. Nothing here is corrupt input, so every exception that the
/// API does not document for the operation is a finding, and so is any difference from the model.
/// <para>Input: byte 0 selects the record type (even: 8-byte records, odd: 64-byte records, which make deep trees
/// from few records) and, in bits 1-2, how batches are applied: 0 in one chunk, 1 in chunks of 7 records, 2 in chunks
/// of 64 (several chunks under one batch call: leaf sidecars stale between them), 3 in chunks of 7 with a queue of at
/// most 5 leaves to rebuild (it fills and is rebuilt within a call); then operations, each an opcode byte (mod 20) and big-endian operands:</para>
/// <code>
///  0, 1 insert k:u16 v:u8        2 remove k:u16           3 find k:u16          4 floor k:u16     5 ceiling k:u16
///  6 range lo:u16 hi:u16         7 insert run start:u16 count:u8 (x8) step:u8
///  8 remove run lo:u16 span:u8 (x16 keys)                 9 bulk load start:u16 count:u16 (mod 4096) step:u8
/// 10 full check (structure, count, enumeration, the map's batch lookup)
/// 11 enumeration through a change k:u16 (changes ahead of it are seen, behind it not)
/// 12 dispose and start over (old instance must throw ObjectDisposedException)
/// 13 InsertMany start:u16 count:u8 step:u8 (any order, repeats: the first of a key wins)
/// 14 RemoveMany start:u16 count:u8 step:u8               15 upsert k:u16 v:u8 (map: Set)
/// 16 clear                       17 first and last        18 descending range lo:u16 hi:u16
/// 19 batch upsert start:u16 count:u8 step:u8 (tree: Upsert each; map: SetMany, the last of a key wins)
/// </code>
/// Keys are u16 values (plenty of collisions); record operations per input are capped at 16 000. All runs share one
/// xfile (two partitions) for the tree; the map has its own.
/// </summary>
public static class OrderedMapTarget
{
    public const int MaxRecordOps = 16_000;
    const long PartitionBytes = 1L << 30;
    /// <summary>One xfile for every run (creating one costs more than a small script): trees take turns between two
    /// partitions (start over needs a second tree while the first still lives) and discard their pages on dispose.</summary>
    static readonly Lazy<Xfbtree.Storage.Xfile> SharedXfile = new(() =>
        Xfbtree.Storage.Xfile.Create(new Xfbtree.Storage.XfileOptions { Name = "xfbtree-fuzz-orderedmap", MaxSize = 2 * PartitionBytes }));
    public const int OpCount = 20;
    /// <summary>The bound of the queue of leaves a batch call rebuilds, for the maps of this run (0: the default).</summary>
    [ThreadStatic] static int RefreshQueueLimit;

    public static FuzzOutcome Run(ReadOnlySpan<byte> input)
    {
        if (input.IsEmpty) return FuzzOutcome.Ok;
        int batchMode = (input[0] >> 1) & 3;
        BatchTestHooks.ChunkLimit = batchMode switch { 1 or 3 => 7, 2 => 64, _ => 0 };
        RefreshQueueLimit = batchMode == 3 ? 5 : 0;
        try
        {
            if ((input[0] & 1) == 0) new Script<FuzzRecord8, FuzzRecord8Comparer>().Run(input[1..]);
            else new Script<FuzzRecord64, FuzzRecord64Comparer>().Run(input[1..]);
        }
        finally
        {
            BatchTestHooks.ChunkLimit = 0;
            RefreshQueueLimit = 0;
        }
        return FuzzOutcome.Ok;
    }

    sealed class Script<TRecord, TComparer>
        where TRecord : unmanaged, IFuzzMapRecord<TRecord>
        where TComparer : struct, IRecordComparer<TRecord>
    {
        ShmemBTree<TRecord, TComparer> _map = NewMap(0);
        readonly ShmemMap<uint, uint, FuzzUIntOrder> _dict = NewDictionary();

        static ShmemMap<uint, uint, FuzzUIntOrder> NewDictionary()
        {
            var map = new ShmemMap<uint, uint, FuzzUIntOrder>();
            if (RefreshQueueLimit > 0) map.StoreForTests.RefreshQueueLimit = RefreshQueueLimit;
            return map;
        }
        int _partition;
        readonly SortedSet<uint> _keys = new();
        readonly Dictionary<uint, uint> _values = new();
        int _budget = MaxRecordOps;

        public void Run(ReadOnlySpan<byte> script)
        {
            try
            {
                var r = new FuzzReader(script);
                while (!r.AtEnd && _budget > 0)
                {
                    int op = r.U8() % OpCount;
                    switch (op)
                    {
                        case 0:
                        case 1: Insert(r.U16(), r.U8()); break;
                        case 2: Remove(r.U16()); break;
                        case 3: Find(r.U16()); break;
                        case 4: Floor(r.U16()); break;
                        case 5: Ceiling(r.U16()); break;
                        case 6: Range(r.U16(), r.U16()); break;
                        case 7:
                            {
                                uint start = r.U16();
                                int count = r.U8() * 8;
                                uint step = r.U8() + 1u;
                                for (int i = 0; i < count && _budget > 0; i++) Insert((start + (uint)i * step) & 0xFFFF, (uint)i);
                                break;
                            }
                        case 8:
                            {
                                uint lo = r.U16();
                                uint hi = lo + r.U8() * 16u;
                                foreach (uint k in _keys.GetViewBetween(lo, hi).ToList())
                                {
                                    if (_budget <= 0) break;
                                    Remove(k);
                                }
                                break;
                            }
                        case 9: BulkLoad(r.U16(), r.U16() % 4096, r.U8()); break;
                        case 10: FullCheck(); break;
                        case 11: EnumerationThroughChange(r.U16()); break;
                        case 12: StartOver(); break;
                        case 13: InsertMany(r.U16(), r.U8(), r.U8()); break;
                        case 14: RemoveMany(r.U16(), r.U8(), r.U8()); break;
                        case 15: Upsert(r.U16(), r.U8()); break;
                        case 16: Clear(); break;
                        case 17: FirstAndLast(); break;
                        case 18: RangeDescending(r.U16(), r.U16()); break;
                        default: UpsertMany(r.U16(), r.U8(), r.U8()); break;
                    }
                }
                FullCheck();
                FuzzTargets.Log?.Invoke($"{MaxRecordOps - _budget} record operations, {_map.Count} records, height {_map.Height}");
            }
            finally
            {
                _map.Dispose();
                _dict.Dispose();
            }
        }

        static ShmemBTree<TRecord, TComparer> NewMap(int partition)
        {
            var map = new ShmemBTree<TRecord, TComparer>(default, new ShmemBTreeOptions { Xfile = SharedXfile.Value, PartitionStart = partition * PartitionBytes, PartitionLength = PartitionBytes });
            if (RefreshQueueLimit > 0) map.StoreForTests.RefreshQueueLimit = RefreshQueueLimit;
            return map;
        }

        static TRecord Probe(uint key) => TRecord.Make(key, 0);

        void Spend(int n = 1) => _budget -= n;

        void Insert(uint key, uint value)
        {
            Spend();
            bool want = _keys.Add(key);
            if (want) _values[key] = value;
            bool got = _map.Insert(TRecord.Make(key, value));
            if (got != want) throw new FuzzFindingException($"insert {key}: map {got}, model {want}");
            if (_dict.TryAdd(key, value) != want) throw new FuzzFindingException($"dictionary TryAdd {key} disagrees with the model");
            ExpectCount("insert");
        }

        void Remove(uint key)
        {
            Spend();
            bool want = _keys.Remove(key);
            _values.Remove(key);
            bool got = _map.Remove(Probe(key));
            if (got != want) throw new FuzzFindingException($"remove {key}: map {got}, model {want}");
            if (_dict.Remove(key) != want) throw new FuzzFindingException($"dictionary Remove {key} disagrees with the model");
            ExpectCount("remove");
        }

        void ExpectCount(string after)
        {
            if (_map.Count != _keys.Count) throw new FuzzFindingException($"after {after}: count {_map.Count}, model {_keys.Count}");
            if (_dict.Count != _keys.Count) throw new FuzzFindingException($"after {after}: dictionary count {_dict.Count}, model {_keys.Count}");
        }

        void Find(uint key)
        {
            Spend();
            bool found = _map.TryFind(Probe(key), out var rec);
            bool want = _keys.Contains(key);
            if (found != want) throw new FuzzFindingException($"find {key}: map {found}, model {want}");
            if (found) ExpectRecord(rec, key, "find");
            if (_map.Contains(Probe(key)) != want) throw new FuzzFindingException($"contains {key} disagrees with the model");
            if (_dict.TryGetValue(key, out uint v) != want || (want && v != _values[key])) throw new FuzzFindingException($"dictionary TryGetValue {key} disagrees with the model");
        }

        void Floor(uint key)
        {
            Spend();
            bool found = _map.TryFindLessOrEqual(Probe(key), out var rec);
            var view = _keys.GetViewBetween(0, key);
            bool want = view.Count > 0;
            if (found != want) throw new FuzzFindingException($"floor {key}: map {found}, model {want}");
            if (found) ExpectRecord(rec, view.Max, "floor");
        }

        void Ceiling(uint key)
        {
            Spend();
            bool found = _map.TryFindGreaterOrEqual(Probe(key), out var rec);
            var view = _keys.GetViewBetween(key, uint.MaxValue);
            bool want = view.Count > 0;
            if (found != want) throw new FuzzFindingException($"ceiling {key}: map {found}, model {want}");
            if (found) ExpectRecord(rec, view.Min, "ceiling");
        }

        void ExpectRecord(in TRecord rec, uint key, string what)
        {
            if (rec.MapKey != key) throw new FuzzFindingException($"{what}: key {rec.MapKey}, model {key}");
            if (rec.MapValue != _values[key]) throw new FuzzFindingException($"{what} {key}: value {rec.MapValue}, model {_values[key]}");
        }

        void Range(uint lo, uint hi)
        {
            var want = lo <= hi ? _keys.GetViewBetween(lo, hi) : new SortedSet<uint>();
            Spend(1 + want.Count);
            using var e = want.GetEnumerator();
            foreach (ref readonly var rec in _map.Range(Probe(lo), Probe(hi)))
            {
                if (!e.MoveNext()) throw new FuzzFindingException($"range [{lo}, {hi}]: extra record {rec.MapKey}");
                ExpectRecord(rec, e.Current, $"range [{lo}, {hi}]");
            }
            if (e.MoveNext()) throw new FuzzFindingException($"range [{lo}, {hi}]: missing record {e.Current}");
        }

        void BulkLoad(uint start, int count, int stepByte)
        {
            Spend(1 + count);
            // step 0 makes duplicates: the load must refuse them and leave the map empty and usable.
            uint step = (uint)stepByte;
            var records = new TRecord[count];
            for (int i = 0; i < count; i++) records[i] = TRecord.Make(start + (uint)i * step, (uint)i);
            bool sorted = step > 0 || count < 2;
            if (_keys.Count > 0)
            {
                try
                {
                    _map.BulkLoad(records);
                    throw new FuzzFindingException("bulk load into a non-empty map was accepted");
                }
                catch (InvalidOperationException) { }
                return;
            }
            if (!sorted)
            {
                try
                {
                    _map.BulkLoad(records);
                    throw new FuzzFindingException("bulk load of unsorted records was accepted");
                }
                catch (ArgumentException) { }
                ExpectCount("refused bulk load");
                return;
            }
            _map.BulkLoad(records);
            for (int i = 0; i < count; i++)
            {
                uint k = start + (uint)i * step;
                _keys.Add(k);
                _values[k] = (uint)i;
                _dict.TryAdd(k, (uint)i);
            }
            ExpectCount("bulk load");
        }

        void FullCheck()
        {
            Spend(1 + _keys.Count);
            var violations = _map.CheckStructure();
            if (violations.Count != 0) throw new FuzzFindingException($"structure check: {string.Join("; ", violations.Take(5))}");
            // Key-prefix sidecars (the 8-byte records' and the map's comparers give prefixes): each one that carries its
            // block's version must describe the block.
            if (_map.CheckSidecars(out _) is var wrongSidecars and > 0) throw new FuzzFindingException($"{wrongSidecars} sidecars differ from their blocks");
            if (_dict.CheckSidecars(out _) is var wrongMapSidecars and > 0) throw new FuzzFindingException($"{wrongMapSidecars} map sidecars differ from their blocks");
            ExpectCount("check");
            using var e = _keys.GetEnumerator();
            foreach (ref readonly var rec in _map)
            {
                if (!e.MoveNext()) throw new FuzzFindingException($"enumeration: extra record {rec.MapKey}");
                ExpectRecord(rec, e.Current, "enumeration");
            }
            if (e.MoveNext()) throw new FuzzFindingException($"enumeration: missing record {e.Current}");
            using var d = _keys.GetEnumerator();
            foreach (ref readonly var entry in _dict)
            {
                if (!d.MoveNext() || entry.Key != d.Current || entry.Value != _values[d.Current]) throw new FuzzFindingException($"dictionary enumeration: {entry.Key} = {entry.Value} where the model has {(d.Current, _values.GetValueOrDefault(d.Current))}");
            }
            if (d.MoveNext()) throw new FuzzFindingException($"dictionary enumeration: missing key {d.Current}");
            var keys = Enumerable.Range(0, Math.Min(600, _keys.Count + 40)).Select(i => (uint)(i * 97 % 65536)).ToArray();
            var values = new uint[keys.Length];
            var found = new bool[keys.Length];
            int hits = _dict.TryGetValues(keys, values, found);
            for (int i = 0; i < keys.Length; i++)
                if (found[i] != _keys.Contains(keys[i]) || (found[i] && values[i] != _values[keys[i]])) throw new FuzzFindingException($"dictionary TryGetValues {keys[i]} disagrees with the model");
            if (hits != keys.Count(_keys.Contains)) throw new FuzzFindingException("dictionary TryGetValues count disagrees with the model");
            var found2 = new bool[keys.Length];
            var records = new TRecord[keys.Length];
            int hits2 = _map.TryFindMany(keys.Select(Probe).ToArray(), records, found2);
            for (int i = 0; i < keys.Length; i++)
            {
                if (found2[i] != _keys.Contains(keys[i])) throw new FuzzFindingException($"TryFindMany {keys[i]} disagrees with the model");
                if (found2[i]) ExpectRecord(records[i], keys[i], "TryFindMany");
            }
            if (hits2 != hits) throw new FuzzFindingException("TryFindMany count disagrees with the model");
        }

        void EnumerationThroughChange(uint key)
        {
            // Enumerations go on through changes: after the first record, a change ahead of it is seen and one behind not.
            Spend(2 + _keys.Count);
            var e = _map.GetEnumerator();
            if (!e.MoveNext())
            {
                if (_keys.Count != 0) throw new FuzzFindingException("enumeration of a non-empty map found nothing");
                return;
            }
            uint first = e.Current.MapKey;
            if (_keys.Contains(key)) Remove(key);
            else Insert(key, key & 0xFF);
            foreach (uint k in _keys.GetViewBetween(first + 1, uint.MaxValue))
            {
                if (!e.MoveNext()) throw new FuzzFindingException($"enumeration through a change ended before {k}");
                ExpectRecord(e.Current, k, "enumeration through a change");
            }
            if (e.MoveNext()) throw new FuzzFindingException($"enumeration through a change: extra record {e.Current.MapKey}");
        }

        void InsertMany(uint start, int count, int stepByte)
        {
            Spend(1 + count);
            var batch = new TRecord[count];
            var expected = 0;
            for (int i = 0; i < count; i++)
            {
                uint k = (start + (uint)(i * stepByte)) & 0xFFFF;
                batch[i] = TRecord.Make(k, (uint)i);
            }
            for (int i = 0; i < count; i++)
            {
                uint k = batch[i].MapKey;
                if (_keys.Add(k))
                {
                    _values[k] = (uint)i;
                    _dict.TryAdd(k, (uint)i);
                    expected++;
                }
            }
            int got = _map.InsertMany(batch);
            if (got != expected) throw new FuzzFindingException($"InsertMany: {got} added, model {expected}");
            ExpectCount("InsertMany");
        }

        void RemoveMany(uint start, int count, int stepByte)
        {
            Spend(1 + count);
            var batch = new TRecord[count];
            int expected = 0;
            for (int i = 0; i < count; i++)
            {
                uint k = (start + (uint)(i * stepByte)) & 0xFFFF;
                batch[i] = Probe(k);
                if (_keys.Remove(k))
                {
                    _values.Remove(k);
                    _dict.Remove(k);
                    expected++;
                }
            }
            int got = _map.RemoveMany(batch);
            if (got != expected) throw new FuzzFindingException($"RemoveMany: {got} removed, model {expected}");
            ExpectCount("RemoveMany");
        }

        void Upsert(uint key, uint value)
        {
            Spend();
            bool existed = !_keys.Add(key);
            _values[key] = value;
            if (_map.Upsert(TRecord.Make(key, value)) != existed) throw new FuzzFindingException($"upsert {key}: replaced disagrees with the model");
            if (_dict.Set(key, value) != existed) throw new FuzzFindingException($"dictionary Set {key}: replaced disagrees with the model");
            ExpectCount("upsert");
            Find(key);
        }

        void UpsertMany(uint start, int count, int stepByte)
        {
            Spend(1 + count);
            var keys = new uint[count];
            var values = new uint[count];
            int added = 0;
            for (int i = 0; i < count; i++)
            {
                keys[i] = (start + (uint)(i * stepByte)) & 0xFFFF;
                values[i] = (uint)(i * 7);
                if (_keys.Add(keys[i])) added++;
                _values[keys[i]] = values[i];
                _map.Upsert(TRecord.Make(keys[i], values[i]));
            }
            int got = _dict.SetMany(keys, values);
            if (got != added) throw new FuzzFindingException($"SetMany: {got} added, model {added}");
            ExpectCount("UpsertMany");
        }

        void Clear()
        {
            Spend();
            _map.Clear();
            _dict.Clear();
            _keys.Clear();
            _values.Clear();
            ExpectCount("clear");
            if (_map.TryGetFirst(out _) || _dict.TryGetLast(out _, out _)) throw new FuzzFindingException("a cleared map has a record");
        }

        void FirstAndLast()
        {
            Spend();
            bool any = _keys.Count > 0;
            if (_map.TryGetFirst(out var first) != any || _map.TryGetLast(out var last) != any) throw new FuzzFindingException("first/last disagree with the model on emptiness");
            if (_dict.TryGetFirst(out uint fk, out uint fv) != any || _dict.TryGetLast(out uint lk, out uint lv) != any) throw new FuzzFindingException("dictionary first/last disagree with the model on emptiness");
            if (!any) return;
            ExpectRecord(first, _keys.Min, "first");
            ExpectRecord(last, _keys.Max, "last");
            if (fk != _keys.Min || fv != _values[fk] || lk != _keys.Max || lv != _values[lk]) throw new FuzzFindingException("dictionary first/last disagree with the model");
        }

        void RangeDescending(uint lo, uint hi)
        {
            var want = lo <= hi ? _keys.GetViewBetween(lo, hi).Reverse().ToList() : new List<uint>();
            Spend(1 + want.Count);
            int i = 0;
            foreach (ref readonly var rec in _map.RangeDescending(Probe(lo), Probe(hi)))
            {
                if (i >= want.Count) throw new FuzzFindingException($"descending range [{lo}, {hi}]: extra record {rec.MapKey}");
                ExpectRecord(rec, want[i++], $"descending range [{lo}, {hi}]");
            }
            if (i != want.Count) throw new FuzzFindingException($"descending range [{lo}, {hi}]: missing record {want[i]}");
            i = 0;
            foreach (ref readonly var entry in _dict.RangeDescending(lo, hi))
            {
                if (i >= want.Count || entry.Key != want[i] || entry.Value != _values[want[i]]) throw new FuzzFindingException($"dictionary descending range [{lo}, {hi}] disagrees at {entry.Key}");
                i++;
            }
            if (i != want.Count) throw new FuzzFindingException($"dictionary descending range [{lo}, {hi}]: missing key {want[i]}");
        }

        void StartOver()
        {
            Spend();
            var old = _map;
            _partition ^= 1;
            _map = NewMap(_partition);
            old.Dispose();
            try
            {
                _ = old.Count;
                throw new FuzzFindingException("a disposed map still answered");
            }
            catch (ObjectDisposedException) { }
            _keys.Clear();
            _values.Clear();
            _dict.Clear();
        }
    }
}
