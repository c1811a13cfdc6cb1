using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// Feeds the bulk loader the new rmapbt's records in key order: every expected record whose owner is not OWN_AG
/// (read from the in-memory rmapbt the scan filled), merged with one OWN_AG record per maximal run of the plan's
/// OWN_AG bitmap (bnobt, cntbt, AGFL and new rmapbt blocks). The scan's own OWN_AG records are dropped: they
/// describe the old tree, whose blocks the plan re-assigns.
/// </summary>
internal struct RebuiltRmapRecordSource : IBtreeRecordSource
{
    readonly BtreeCursor<RmapbtOps> _expected;
    readonly AgBlockBitmap _ownAg;
    bool _expectedStarted, _expectedDone, _ownDone;
    uint _nextOwnSearch, _ownStart, _ownLength;
    bool _haveOwn;

    /// <summary>Merges <paramref name="expected"/>'s tree (from its first record) with <paramref name="ownAg"/>'s runs.</summary>
    public RebuiltRmapRecordSource(BtreeCursor<RmapbtOps> expected, AgBlockBitmap ownAg)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(ownAg);
        _expected = expected;
        _ownAg = ownAg;
    }

    /// <inheritdoc/>
    public void Fill(Span<byte> destination, int count)
    {
        for (int i = 0; i < count; i++)
        {
            Span<byte> record = destination.Slice(i * RmapbtOps.RecordLength, RmapbtOps.RecordLength);
            if (!Next(record))
            {
                throw new InvalidOperationException("the rebuilt rmap record set has fewer records than planned");
            }
        }
    }

    bool Next(Span<byte> record)
    {
        bool haveExpected = PeekExpected();
        bool haveOwn = PeekOwn();
        if (!haveExpected && !haveOwn)
        {
            return false;
        }
        bool takeOwn = haveOwn && (!haveExpected || OwnSortsFirst(_expected.Current));
        if (takeOwn)
        {
            BinaryPrimitives.WriteUInt32BigEndian(record, _ownStart);
            BinaryPrimitives.WriteUInt32BigEndian(record[4..], _ownLength);
            BinaryPrimitives.WriteUInt64BigEndian(record[8..], RmapOwner.Ag);
            BinaryPrimitives.WriteUInt64BigEndian(record[16..], 0);
            _nextOwnSearch = _ownStart + _ownLength;
            _haveOwn = false;
        }
        else
        {
            _expected.Current.CopyTo(record);
            _expectedStarted = true;
            AdvanceExpected();
        }
        return true;
    }

    bool OwnSortsFirst(ReadOnlySpan<byte> expected)
    {
        uint start = BinaryPrimitives.ReadUInt32BigEndian(expected);
        if (_ownStart != start)
        {
            return _ownStart < start;
        }
        return RmapOwner.Ag < BinaryPrimitives.ReadUInt64BigEndian(expected[8..]);
    }

    /// <summary>Positions the cursor on the next non-OWN_AG expected record; false at the end.</summary>
    bool PeekExpected()
    {
        if (_expectedDone)
        {
            return false;
        }
        if (!_expectedStarted)
        {
            _expectedStarted = true;
            if (!_expected.MoveFirst())
            {
                _expectedDone = true;
                return false;
            }
        }
        while (BinaryPrimitives.ReadUInt64BigEndian(_expected.Current[8..]) == RmapOwner.Ag)
        {
            if (!_expected.Increment())
            {
                _expectedDone = true;
                return false;
            }
        }
        return true;
    }

    void AdvanceExpected()
    {
        if (!_expected.Increment())
        {
            _expectedDone = true;
        }
    }

    bool PeekOwn()
    {
        if (_haveOwn)
        {
            return true;
        }
        if (_ownDone)
        {
            return false;
        }
        if (_nextOwnSearch >= _ownAg.AgLength || !_ownAg.NextExtent(_nextOwnSearch, out _ownStart, out _ownLength))
        {
            _ownDone = true;
            return false;
        }
        _haveOwn = true;
        return true;
    }
}
