using Xfbtree.Buffers;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>TEMPORARY until write-core lands: stand-ins for transaction calls the namespace code uses.</summary>
internal static class PendingCoreApi
{
    public static void LogBuffer(this WriteTransaction tx, BlockBuffer buffer, int offset, int length) => throw new NotImplementedException("write-core");
    public static void ReadData(this WriteTransaction tx, ulong fsbno, Span<byte> destination) => throw new NotImplementedException("write-core");
}
