using CsCheck;
using Xfbtree.Storage;

namespace Xfbtree.Tests.Storage;

/// <summary>
/// Model-based check: random Store/Load/Discard/Pin sequences against a plain byte array, on every backend.
/// CsCheck shrinks a failing sequence to a minimal one and prints its seed.
/// </summary>
public sealed unsafe class XfileModelTests
{
    private const int Pages = 24;

    public static TheoryData<XfileBackendKind> Backends => new()
    {
        XfileBackendKind.Memfd,
        XfileBackendKind.TmpFile,
        XfileBackendKind.Portable,
    };

    [Theory]
    [MemberData(nameof(Backends))]
    public void RandomOperations_MatchAByteArrayModel(XfileBackendKind backend)
    {
        int iterations = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 2000 : 150;
        Gen.Int[0, int.MaxValue].Array[1, 40].Sample(operations => Replay(backend, operations), iter: iterations);
    }

    private static void Replay(XfileBackendKind backend, int[] operations)
    {
        using Xfile xfile = Xfile.Create(new XfileOptions { Backend = backend, MaxSize = Pages * (long)Environment.SystemPageSize });
        int pageSize = xfile.PageSize;
        int size = Pages * pageSize;
        byte[] model = new byte[size];
        var pinned = new Dictionary<long, int>();
        foreach (int operation in operations)
        {
            var random = new Random(operation);
            int position = random.Next(size);
            int length = random.Next(0, Math.Min(3 * pageSize, size - position) + 1);
            switch (operation % 5)
            {
                case 0:
                case 1:
                    byte[] data = new byte[length];
                    random.NextBytes(data);
                    xfile.Store(position, data);
                    data.CopyTo(model, position);
                    break;
                case 2:
                    bool touchesPinned = false;
                    for (long page = position / pageSize; length > 0 && page <= (position + length - 1) / pageSize; page++)
                    {
                        touchesPinned |= pinned.ContainsKey(page);
                    }
                    if (touchesPinned)
                    {
                        Assert.Throws<InvalidOperationException>(() => xfile.Discard(position, length));
                    }
                    else
                    {
                        xfile.Discard(position, length);
                        Array.Clear(model, position, length);
                    }
                    break;
                case 3:
                    long pinPage = position / pageSize;
                    byte* frame = xfile.PinPage(pinPage * pageSize);
                    int at = random.Next(pageSize);
                    byte value = (byte)random.Next(256);
                    frame[at] = value;
                    model[pinPage * pageSize + at] = value;
                    pinned[pinPage] = pinned.GetValueOrDefault(pinPage) + 1;
                    break;
                default:
                    if (pinned.Count > 0)
                    {
                        long unpin = pinned.Keys.First();
                        xfile.UnpinPage(unpin * pageSize);
                        if (--pinned[unpin] == 0)
                        {
                            pinned.Remove(unpin);
                        }
                    }
                    break;
            }
            byte[] actual = new byte[length];
            xfile.Load(position, actual);
            Assert.True(actual.AsSpan().SequenceEqual(model.AsSpan(position, length)), "partial load differs from the model");
        }
        byte[] all = new byte[size];
        xfile.Load(0, all);
        Assert.True(all.AsSpan().SequenceEqual(model), "content differs from the model");
        Assert.True(xfile.CommittedBytes <= size);
        foreach ((long page, int count) in pinned)
        {
            Assert.Equal(count, xfile.PinCount(page * pageSize));
            for (int i = 0; i < count; i++)
            {
                xfile.UnpinPage(page * pageSize);
            }
        }
    }
}
