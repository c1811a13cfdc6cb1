namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// For every image sector a metadata entry of the journal covers since the last checkpoint, the journal length at
/// the end of the latest record that logged it (docs/write-engine.md, "Delayed write-back"). The write-ahead rule is
/// that no sector is written in place before that record is durable: the write-back syncs the journal first, file
/// data over a sector logged as metadata (a block freed and reused as data before the free is durable) syncs it
/// too, and <see cref="WriteEngineOptions.CheckWriteAhead"/> fails any in-place write that would break the rule.
/// Memory: one entry per sector logged since the last checkpoint, so at most the checkpoint bound divided by the
/// 128-byte smallest entry (the journal is truncated at each checkpoint, and this with it).
/// Beside the metadata sectors it keeps the 4 KiB pieces of the image that journaled file data covers since the
/// checkpoint: file data written in place without a journal entry (<see cref="IsUnjournaled"/>) must not land
/// where a replayed record would put older bytes back (one entry per 4 KiB of journaled data, bounded the same way).
/// </summary>
internal sealed class JournalCoverage
{
    private readonly Lock gate = new();
    private readonly Dictionary<long, long> recordEndBySector = new();
    private readonly HashSet<long> journaledDataPieces = new();
    private const int DataPieceShift = 12;

    /// <summary>Records that the metadata entries of one record (the entries from <paramref name="first"/> on;
    /// file data comes first in a record) are durable only once the journal is synced to <paramref name="recordEnd"/>.</summary>
    public void Note(List<JournalEntry> entries, int first, long recordEnd)
    {
        lock (gate)
        {
            for (int i = first; i < entries.Count; i++)
            {
                JournalEntry e = entries[i];
                long last = (e.Offset + e.Bytes.Length - 1) / 512;
                for (long sector = e.Offset / 512; sector <= last; sector++)
                {
                    // Two commits may note one sector in either order: keep the later record.
                    if (!recordEndBySector.TryGetValue(sector, out long seen) || seen < recordEnd)
                    {
                        recordEndBySector[sector] = recordEnd;
                    }
                }
            }
        }
    }

    /// <summary>Records that the file data entries [<paramref name="first"/>, <paramref name="end"/>) of a record
    /// were journaled: a replay writes them again.</summary>
    public void NoteJournaledData(List<JournalEntry> entries, int first, int end)
    {
        if (first >= end)
        {
            return;
        }
        lock (gate)
        {
            for (int i = first; i < end; i++)
            {
                JournalEntry e = entries[i];
                long last = (e.Offset + e.Bytes.Length - 1) >> DataPieceShift;
                for (long piece = e.Offset >> DataPieceShift; piece <= last; piece++)
                {
                    journaledDataPieces.Add(piece);
                }
            }
        }
    }

    /// <summary>True when no journal record since the last checkpoint holds anything in [<paramref name="byteOffset"/>,
    /// +<paramref name="length"/>): neither metadata nor file data. Only then may file data go there in place without
    /// a journal entry of its own, since a replay leaves such a range as the image has it.</summary>
    public bool IsUnjournaled(long byteOffset, long length)
    {
        lock (gate)
        {
            if (journaledDataPieces.Count != 0)
            {
                long lastPiece = (byteOffset + length - 1) >> DataPieceShift;
                for (long piece = byteOffset >> DataPieceShift; piece <= lastPiece; piece++)
                {
                    if (journaledDataPieces.Contains(piece))
                    {
                        return false;
                    }
                }
            }
            if (recordEndBySector.Count != 0)
            {
                long last = (byteOffset + length - 1) / 512;
                for (long sector = byteOffset / 512; sector <= last; sector++)
                {
                    if (recordEndBySector.ContainsKey(sector))
                    {
                        return false;
                    }
                }
            }
        }
        return true;
    }

    /// <summary>The end of the latest record that logged metadata in [<paramref name="byteOffset"/>, +<paramref name="length"/>),
    /// or 0 when none did since the last checkpoint.</summary>
    public long LatestRecordOver(long byteOffset, long length)
    {
        long latest = 0;
        lock (gate)
        {
            if (recordEndBySector.Count == 0)
            {
                return 0;
            }
            long last = (byteOffset + length - 1) / 512;
            for (long sector = byteOffset / 512; sector <= last; sector++)
            {
                if (recordEndBySector.TryGetValue(sector, out long end) && end > latest)
                {
                    latest = end;
                }
            }
        }
        return latest;
    }

    /// <summary>The journal was emptied (a checkpoint, every covered sector in place and synced).</summary>
    public void Clear()
    {
        lock (gate)
        {
            recordEndBySector.Clear();
            journaledDataPieces.Clear();
        }
    }
}
