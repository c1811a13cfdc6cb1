using Xfbtree.Btree;
using Xfbtree.Xfs.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Trees;

/// <summary>
/// The rmap record operations on the real on-disk rmapbt of a scratch filesystem made with
/// <c>mkfs.xfs -m rmapbt=1</c>: split and re-merge every record (unmap a piece, map it back) through the engine,
/// write the blocks back, and <c>xfs_repair -n</c> must accept the image; removing a mapping repair checks must
/// make it complain (so the oracle is really looking).
/// </summary>
public sealed class RmapOnDiskScratchTests(ITestOutputHelper output)
{
    static string MakeScratch(string dir)
    {
        string img = Path.Combine(dir, "scratch.img");
        using (var f = File.Create(img)) f.SetLength(512L << 20);
        // A protofile gives the AGs inode-owned data extents (logical offsets) besides the metadata owners.
        var proto = new List<string> { "/dev/null", "0 0", "d--755 0 0" };
        int n = 0;
        foreach (var file in Directory.EnumerateFiles("/usr/lib/x86_64-linux-gnu").Concat(Directory.EnumerateFiles("/usr/bin")))
        {
            var info = new FileInfo(file);
            if (info.LinkTarget != null || info.Length < 4096 || info.Length > (4 << 20) || file.Contains(' ', StringComparison.Ordinal)) continue;
            proto.Add($"f{n++} ---644 0 0 {file}");
            if (n == 300) break;
        }
        proto.Add("$");
        proto.Add("$");
        string protoPath = Path.Combine(dir, "proto");
        File.WriteAllLines(protoPath, proto);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-m", "crc=1,rmapbt=1,reflink=0", "-d", "agcount=2", "-p", protoPath, img]);
        return img;
    }

    static (int Rc, string Output) Repair(string img)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(TreeFixtures.Tool("xfs_repair")) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-n");
        psi.ArgumentList.Add(img);
        using var p = ChildProcesses.Start(psi);
        var so = p.StandardOutput.ReadToEndAsync();
        string se = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, so.Result + se);
    }

    static List<RmapRecord> Edit(string img, Action<RmapEditor, List<RmapRecord>> edit)
    {
        using var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite);
        var sb = new byte[512];
        RandomAccess.Read(fh, sb, 0);
        var geo = new FixtureGeometry(sb);
        var ag = BtreeFixtureTreeTests.ReadAg(geo, fh, 0);
        uint agLen = ag.U32(ag.Agf, 12);
        var store = new ImageBlockStore(fh, geo, 0) { Writable = true };
        var tree = new Btree<RmapbtOps>(new RmapbtOps(false, agLen), store, new BtreeRootValue(ag.U32(ag.Agf, 24), (int)ag.U32(ag.Agf, 36)), geo.Uuid, 0);
        var before = Records(tree);
        var editor = new RmapEditor(tree);
        edit(editor, before);
        editor.Cursor.Release();
        var report = tree.Check();
        Assert.True(report.IsClean, report.ToString());
        var after = Records(tree);
        Assert.Equal(0, store.Holds);
        return after;
    }

    static List<RmapRecord> Records(Btree<RmapbtOps> tree)
    {
        var v = new RecordList();
        using (var c = tree.CreateCursor()) c.QueryAll(ref v);
        return (v.Records ?? new()).Select(r => RmapRecord.Read(r)).ToList();
    }

    [Fact]
    public void RmapOperationsOnScratchImageKeepXfsRepairHappy()
    {
        string dir = Directory.CreateTempSubdirectory("xfbtree-rmap-scratch").FullName;
        try
        {
            string img = MakeScratch(dir);
            Assert.Equal(0, Repair(img).Rc);
            List<RmapRecord> original = new();
            int edits = 0;
            var after = Edit(img, (editor, recs) =>
            {
                original = recs;
                foreach (var r in recs)
                {
                    // Split the record by unmapping one block in the middle (or its last block), then map it back: merge.
                    uint at = r.BlockCount > 2 ? r.StartBlock + r.BlockCount / 2 : r.StartBlock + r.BlockCount - 1;
                    bool logical = !RmapbtOps.IsSpecialOwner(r.Owner) && !r.IsBmbtBlock;
                    var piece = new RmapRecord(at, 1, r.Owner, (r.RawOffset & ~RmapbtOps.OffsetMask) | (logical ? r.Offset + (at - r.StartBlock) : 0));
                    editor.Unmap(piece);
                    editor.Map(piece);
                    edits += 2;
                }
            });
            Assert.Equal(original, after);
            var (rc, text) = Repair(img);
            output.WriteLine($"{original.Count} records, {edits} operations written back; xfs_repair -n rc={rc}");
            Assert.True(rc == 0, text);

            // Now leave the inode chunk mapping short by one block: repair must notice.
            Edit(img, (editor, recs) =>
            {
                var chunk = recs.First(r => r.Owner == 0xFFFFFFFFFFFFFFF9 && r.BlockCount > 1);
                editor.Unmap(new RmapRecord(chunk.StartBlock + chunk.BlockCount - 1, 1, chunk.Owner, 0));
            });
            var (rc2, text2) = Repair(img);
            output.WriteLine($"after dropping one OWN_INODES block: xfs_repair -n rc={rc2}");
            Assert.True(rc2 != 0, "xfs_repair -n accepted a missing inode-chunk rmap: " + text2);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
