using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Space;

/// <summary>
/// AG selection for <see cref="WriteTransaction.Allocate"/>: the hint's AG first (or the highest AG the
/// transaction already holds, or AG 0), then ascending AGs, then a wrap to the lower ones. Higher AGs are locked
/// in order (blocking); a lower AG than one held is only tried (LockAg restarts the transaction with it first on
/// contention), so the lock order holds. Sick AGs are skipped; AGs whose last published figures cannot satisfy
/// the request are skipped without locking. NoSpace when no AG can: the transaction is cancelled by the caller.
/// </summary>
internal static class SpaceAllocator
{
    public static AllocatedExtent Allocate(WriteTransaction tx, in AllocationRequest request)
    {
        var geo = tx.Geometry;
        if (request.MinLength == 0 || request.MaxLength < request.MinLength)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: allocation of {request.MinLength}..{request.MaxLength} blocks");
        }
        if (request.Alignment == 0 || request.Alignment > geo.AgBlocks)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: allocation alignment {request.Alignment}");
        }
        uint agCount = geo.AgCount;
        bool hinted = request.HintFsbno != AllocationRequest.NullFsbno && geo.FsbToAgno(request.HintFsbno) < agCount;
        if (request.Exact && !hinted)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: exact allocation without a valid hint");
        }
        if (request.OnlyAg is { } only && only >= agCount)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: AG {only} does not exist");
        }
        uint start = request.OnlyAg ?? (hinted ? geo.FsbToAgno(request.HintFsbno) : tx.HighestAg ?? 0);
        uint tries = request.OnlyAg is null && !request.Exact ? agCount : 1;
        for (uint i = 0; i < tries; i++)
        {
            uint agno = (start + i) % agCount;
            EngineAg ag = tx.Engine.Ag(agno);
            // A sick AG is left out of the search, but not when the caller holds it and asks for it by name: a repair
            // rebuilding one of its trees (the AGF it reads still verifies its other fields, see AgSpace).
            if (ag.IsSick && !(request.OnlyAg == agno && tx.HoldsAg(agno)))
            {
                continue;
            }
            if (!tx.HoldsAg(agno) && !MightFit(ag, request))
            {
                continue;
            }
            tx.LockAg(agno);
            AgSpace space = tx.Space(agno);
            var here = request with { HintFsbno = agno == (hinted ? geo.FsbToAgno(request.HintFsbno) : uint.MaxValue) ? request.HintFsbno : AllocationRequest.NullFsbno };
            if (space.TryAllocateHere(here, out uint agbno, out uint length))
            {
                return new AllocatedExtent(agno, agbno, length, geo.AgbToFsb(agno, agbno));
            }
        }
        throw new XfsWriteException(WriteErrorKind.NoSpace,
            $"{tx.Operation}: no free space for {request.MinLength}{(request.MaxLength != request.MinLength ? $"..{request.MaxLength}" : "")} blocks ({request.Purpose}{(request.Exact ? ", exact" : "")}{(request.Alignment > 1 ? $", aligned to {request.Alignment}" : "")})");
    }

    /// <summary>A cheap filter on the AG's last committed figures (no lock): can its longest extent hold the request?</summary>
    private static bool MightFit(EngineAg ag, in AllocationRequest request)
    {
        ulong need = (ulong)request.MinLength + request.Alignment - 1;
        return (ulong)ag.Longest + ag.FreeListCount >= need;
    }

    /// <summary>NoSpace unless the AGs' free space (after free lists and reservations, as last committed, plus
    /// what this transaction sees in the AGs it holds) could supply <paramref name="blocks"/>.</summary>
    public static void EnsureSpace(WriteTransaction tx, long blocks, AllocationPurpose purpose)
    {
        if (blocks <= 0)
        {
            return;
        }
        long total = 0;
        for (uint agno = 0; agno < tx.Geometry.AgCount; agno++)
        {
            EngineAg ag = tx.Engine.Ag(agno);
            if (ag.IsSick)
            {
                continue;
            }
            if (tx.HoldsAg(agno))
            {
                AgSpace space = tx.Space(agno);
                long reserved = AgReservations.Needed(tx, space, purpose);
                uint need = space.MinFreeList();
                total += Math.Max(0, (long)space.FreeBlocks + Math.Min(space.FlCount, need) - reserved - need);
            }
            else
            {
                total += Math.Max(0, (long)ag.FreeBlocks - ag.PublishedReserve(purpose));
            }
            if (total >= blocks)
            {
                return;
            }
        }
        throw new XfsWriteException(WriteErrorKind.NoSpace, $"{tx.Operation}: {blocks} blocks needed, {total} free outside the reservations");
    }
}
