using Xfbtree.InMemory;

namespace Xfbtree.Tests.InMemory;

/// <summary>
/// The sorts of the batch writes: the merge sort and the bucket sort of large chunks must both be stable (the first of
/// equal keys given to <c>InsertMany</c> is the one inserted, the last given to <c>SetMany</c> the value kept) and
/// sort any input: random, with many or only equal keys, already sorted, reversed, or skewed into one bucket.
/// </summary>
public sealed class BatchSortTests
{
    readonly record struct Item(int Key, int Position);

    readonly struct ByKey : IStableOrder<Item>
    {
        public int Compare(in Item x, in Item y) => x.Key.CompareTo(y.Key);
    }

    public static TheoryData<string, int> Inputs()
    {
        var data = new TheoryData<string, int>();
        foreach (string shape in new[] { "random", "few keys", "one key", "sorted", "reversed", "skewed" })
            foreach (int n in new[] { 1, 100, BucketSort.MinLength - 1, BucketSort.MinLength, 100_003 })
                data.Add(shape, n);
        return data;
    }

    [Theory]
    [MemberData(nameof(Inputs))]
    public void BucketAndMergeSortsAreStable(string shape, int n)
    {
        var random = new Random(n);
        int Key(int i) => shape switch
        {
            "random" => random.Next(),
            "few keys" => random.Next(0, 5),
            "one key" => 7,
            "sorted" => i / 3,
            "reversed" => n - i / 2,
            _ => random.Next(0, 10) == 0 ? random.Next() : 42, // nine in ten equal: one bucket takes most
        };
        var input = Enumerable.Range(0, n).Select(i => new Item(Key(i), i)).ToArray();
        var expected = input.OrderBy(x => x.Key).ToArray(); // LINQ's OrderBy is stable
        foreach (bool buckets in new[] { false, true })
        {
            var data = (Item[])input.Clone();
            var scratch = new Item[n];
            if (buckets) BucketSort.Sort<Item, ByKey>(data, scratch, new byte[n], default);
            else StableSort.Sort<Item, ByKey>(data, scratch, default);
            Assert.True(data.SequenceEqual(expected), $"{(buckets ? "bucket" : "merge")} sort of {n} {shape} items is not the stable order");
        }
    }
}
