using Xfbtree.Buffers;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// One directory block joined to a transaction: one buffer when its filesystem blocks are contiguous on disk,
/// else one buffer per contiguous piece with the block assembled in memory (a directory block larger than the
/// filesystem block may be mapped by several extents). <see cref="Log"/> copies an assembled block back into its
/// pieces and logs them; at commit the write verifier recomputes the CRC over the whole directory block.
/// </summary>
internal sealed class DirectoryBuffer
{
    readonly BlockBuffer[] _pieces;
    readonly byte[]? _assembled;

    DirectoryBuffer(ulong fileBlock, BlockBuffer[] pieces, byte[]? assembled)
    {
        FileBlock = fileBlock;
        _pieces = pieces;
        _assembled = assembled;
    }

    /// <summary>File block (in filesystem blocks) of the directory block's start.</summary>
    public ulong FileBlock { get; }
    /// <summary>Disk address of the first piece: the block's blkno.</summary>
    public long Daddr => _pieces[0].Daddr;
    /// <summary>The whole directory block.</summary>
    public Span<byte> Span => _assembled ?? _pieces[0].Span;

    /// <summary>Reads (and joins) the pieces of a directory block and checks its header identity; throws Corrupt.</summary>
    public static DirectoryBuffer Read(WriteTransaction tx, ulong fileBlock, IReadOnlyList<(long Daddr, int LengthBB)> pieces, ulong owner, string where)
    {
        var group = new PieceGroup();
        var verifier = new DirectoryBlockVerifier(group, owner, tx.Engine.Geometry.MetaUuid.ToArray()) { PieceRead = pieces.Count > 1 };
        var bufs = new BlockBuffer[pieces.Count];
        try
        {
            for (int i = 0; i < pieces.Count; i++) bufs[i] = tx.ReadBuffer(pieces[i].Daddr, pieces[i].LengthBB, verifier);
        }
        catch (CorruptionException e) { throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: {e.Message}", e); }
        group.Pieces = bufs;
        byte[]? assembled = null;
        if (bufs.Length > 1)
        {
            assembled = group.Assemble();
            if (DirectoryFormat.CheckIdentity(assembled, bufs[0].Daddr, owner, tx.Engine.Geometry.MetaUuid) is { } why)
                throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: directory block at daddr {bufs[0].Daddr}: {why}");
        }
        return new DirectoryBuffer(fileBlock, bufs, assembled);
    }

    /// <summary>New (zeroed, joined) buffers for a directory block about to be formatted; the caller writes the
    /// header identity and the body, then logs.</summary>
    public static DirectoryBuffer New(WriteTransaction tx, ulong fileBlock, IReadOnlyList<(long Daddr, int LengthBB)> pieces, ulong owner)
    {
        var group = new PieceGroup();
        var verifier = new DirectoryBlockVerifier(group, owner, tx.Engine.Geometry.MetaUuid.ToArray());
        var bufs = new BlockBuffer[pieces.Count];
        for (int i = 0; i < pieces.Count; i++)
        {
            bufs[i] = tx.GetNewBuffer(pieces[i].Daddr, pieces[i].LengthBB, verifier);
            bufs[i].Span.Clear();
        }
        group.Pieces = bufs;
        return new DirectoryBuffer(fileBlock, bufs, bufs.Length > 1 ? new byte[group.Length] : null);
    }

    /// <summary>Recomputes the CRC and marks the whole block changed.</summary>
    public void Log(WriteTransaction tx)
    {
        var span = Span;
        XfsCrc.Update(span, DirectoryFormat.CrcOffsetOf(span));
        int at = 0;
        foreach (var b in _pieces)
        {
            if (_assembled != null) _assembled.AsSpan(at, b.Length).CopyTo(b.Span);
            at += b.Length;
            tx.LogBuffer(b, 0, b.Length);
        }
    }

    /// <summary>The block was freed: its buffers are never written back.</summary>
    public void MarkFreed()
    {
        foreach (var b in _pieces) b.MarkStale();
    }

    /// <summary>The buffers of one directory block (shared by their verifier).</summary>
    sealed class PieceGroup
    {
        /// <summary>The pieces in file order (empty until read).</summary>
        public BlockBuffer[] Pieces { get; set; } = [];
        /// <summary>Bytes of the whole directory block.</summary>
        public int Length => Pieces.Sum(p => p.Length);

        /// <summary>The pieces copied into one array.</summary>
        public byte[] Assemble()
        {
            var all = new byte[Length];
            int at = 0;
            foreach (var p in Pieces)
            {
                p.Span.CopyTo(all.AsSpan(at));
                at += p.Length;
            }
            return all;
        }
    }

    /// <summary>
    /// Read: a single-piece block is checked whole (magic family, CRC, blkno, UUID, owner); a piece of a larger
    /// block is checked after assembly by <see cref="Read"/>. Write: the CRC of the whole directory block is
    /// recomputed into its first piece (the CRC field is in the first 16 bytes).
    /// </summary>
    sealed class DirectoryBlockVerifier(PieceGroup group, ulong owner, byte[] uuid) : IBufferVerifier
    {
        /// <summary>Block type in corruption messages.</summary>
        public string Name => "directory block";

        /// <inheritdoc/>
        public void VerifyRead(BlockBuffer buffer)
        {
            if (group.Pieces.Length > 1 || !IsWhole(buffer)) return;
            if (DirectoryFormat.CheckIdentity(buffer.Span, buffer.Daddr, owner, uuid) is { } why)
                throw new CorruptionException(Name, buffer.Daddr, why);
        }

        /// <summary>Before the pieces are known (first read), a buffer is whole unless the caller reads pieces.</summary>
        bool IsWhole(BlockBuffer buffer) => group.Pieces.Length == 0 ? !PieceRead : ReferenceEquals(group.Pieces[0], buffer);

        /// <summary>Set by the reader before reading several pieces (their read check waits for assembly).</summary>
        public bool PieceRead { get; init; }

        /// <inheritdoc/>
        public void PrepareWrite(BlockBuffer buffer)
        {
            if (group.Pieces.Length <= 1)
            {
                XfsCrc.Update(buffer.Span, DirectoryFormat.CrcOffsetOf(buffer.Span));
                return;
            }
            var all = group.Assemble();
            int crc = DirectoryFormat.CrcOffsetOf(all);
            XfsCrc.Update(all, crc);
            all.AsSpan(crc, 4).CopyTo(group.Pieces[0].Span[crc..]);
        }
    }
}
