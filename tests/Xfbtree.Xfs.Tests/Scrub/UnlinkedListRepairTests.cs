using System.Buffers.Binary;
using System.Text.RegularExpressions;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The AGI unlinked lists online: inodes held open after their last unlink (the engine keeps them on the lists) are
/// what the online check expects and what the AGI rebuild relinks; deterministic interleavings (test hooks, no sleeps)
/// of a rebuild with the unlink of an open file and with the last release of one.
/// </summary>
public sealed class UnlinkedListRepairTests(ITestOutputHelper output)
{
    /// <summary>Creates <paramref name="count"/> files in a new directory, takes a reference on each and removes every
    /// name: the engine puts each on its AGI bucket's list.</summary>
    static List<InodeAttributes> HoldAndUnlink(XfsFileSystem fs, string dir, int count, bool unlink = true)
    {
        fs.Namespace.Mkdir(dir);
        var files = new List<InodeAttributes>();
        for (int i = 0; i < count; i++)
        {
            fs.Namespace.Create($"{dir}/f{i}");
            if (i % 5 == 0) fs.Write($"{dir}/f{i}", 0, new byte[3000]);
            files.Add(fs.GetAttr($"{dir}/f{i}"));
        }
        foreach (var f in files) fs.Namespace.Acquire(f.Handle);
        if (unlink)
        {
            for (int i = 0; i < count; i++) fs.Namespace.Unlink($"{dir}/f{i}");
        }
        return files;
    }

    /// <summary>The AG's unlinked lists as the engine holds them (AG locked: every list change holds it), each bucket's
    /// chain of AG inode numbers from its head.</summary>
    static List<List<uint>> Lists(WriteEngine engine, uint agno) => engine.Execute("read the unlinked lists", tx =>
    {
        tx.LockAg(agno);
        var agi = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
        var lists = new List<List<uint>>();
        for (int b = 0; b < Agi.UnlinkedBuckets; b++)
        {
            var chain = new List<uint>();
            for (uint cur = BinaryPrimitives.ReadUInt32BigEndian(agi.Span[(Agi.UnlinkedOffset + 4 * b)..]); cur != Agi.NullAgino && chain.Count <= 1 << 16;)
            {
                chain.Add(cur);
                cur = InodeAttributeFields.NextUnlinked(engine.GetInode(engine.Geometry.AginoToIno(agno, cur)).Core);
            }
            lists.Add(chain);
        }
        return lists;
    });

    static void AssertOnlineClean(WriteEngine engine, string when)
    {
        ScrubReport report = OnlineScrubber.Run(engine);
        Assert.True(report.IsClean, when + ": " + string.Join("\n", report.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
    }

    static List<string> BucketsOnDisk(string image)
    {
        var result = new List<string>();
        for (uint ag = 0; ag < 4; ag++)
        {
            string text = TreeFixtures.XfsDb(image, $"agi {ag}", "print unlinked");
            foreach (Match m in Regex.Matches(text, @"(\d+):(\d+)")) result.Add($"AG {ag} {m.Value}");
        }
        return result;
    }

    [Fact]
    public void HeldUnlinkedInodesAreCheckedCleanAndStayOnTheRebuiltLists()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            WriteEngine engine = fs.Engine;
            // 130 consecutive inodes: most buckets hold two or three, listed newest first by the unlinks.
            var files = HoldAndUnlink(fs, "/u", 130);
            var byAg = files.GroupBy(f => engine.Geometry.InoToAgno(f.Ino)).ToDictionary(g => g.Key, g => g.Select(f => engine.Geometry.InoToAgino(f.Ino)).ToHashSet());
            ScrubReport before = OnlineScrubber.Run(engine);
            Assert.True(before.IsClean, string.Join("\n", before.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
            foreach (uint ag in byAg.Keys)
            {
                ScrubFinding agi = before.Findings.Single(f => f.Subject == $"AG {ag} AGI");
                Assert.Contains($"{byAg[ag].Count} unlinked inodes pending", agi.Note, StringComparison.Ordinal);
            }
            long relinked = 0;
            foreach (var (ag, members) in byAg)
            {
                AgRebuildResult r = OnlineAgHeaderRepair.RepairAgi(engine, ag);
                output.WriteLine($"AG {ag}: {r}");
                Assert.Contains($"unlinked lists: {members.Count} inodes", r.Found, StringComparison.Ordinal);
                relinked += long.Parse(Regex.Match(r.Found!, @"(\d+) cores relinked").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                var lists = Lists(engine, ag);
                Assert.Equal(members.OrderBy(a => a), lists.SelectMany(l => l).OrderBy(a => a));
                for (int b = 0; b < lists.Count; b++)
                {
                    Assert.All(lists[b], a => Assert.Equal(b, (int)(a % 64)));
                    Assert.Equal(lists[b].OrderBy(a => a), lists[b]);   // the rebuild chains each bucket in inode order
                }
            }
            Assert.True(relinked > 0, "the unlinks listed each bucket newest first: the rebuild must have relinked cores");
            AssertOnlineClean(engine, "after the rebuilds");
            // Still usable through their handles, then released in an order that takes inodes off heads and middles.
            fs.Files.Write(files[7].Handle, 10, new byte[] { 1, 2, 3 });
            var order = files.Where((_, i) => i % 2 == 1).Concat(files.Where((_, i) => i % 2 == 0).Reverse()).ToList();
            foreach (var f in order) fs.Namespace.Release(f.Handle);
            foreach (uint ag in byAg.Keys) Assert.All(Lists(engine, ag), l => Assert.Empty(l));
            AssertOnlineClean(engine, "after the releases");
            fs.Close();
        }
        Assert.Empty(BucketsOnDisk(image));
        WriteEngineTestSupport.AssertOraclesClean(image, "held unlinked inodes through an AGI rebuild");
    }

    /// <summary>
    /// The unlink of the last name of an open file starts while the AGI rebuild holds the AG lock: the unlink (its
    /// inode and directory locked) waits for the AG lock, the rebuild reads the file's nlink as 1 and lists nothing,
    /// commits, and then the unlink puts the file on the rebuilt list; its last release frees it from there.
    /// </summary>
    [Fact]
    public void ARebuildRacingTheUnlinkOfAnOpenFileKeepsItOnTheList()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            WriteEngine engine = fs.Engine;
            var held = HoldAndUnlink(fs, "/r", 3, unlink: false);
            InodeAttributes victim = held[1];
            uint ag = engine.Geometry.InoToAgno(victim.Ino), agino = engine.Geometry.InoToAgino(victim.Ino);
            Thread? unlinker = null;
            Exception? unlinkError = null;
            using var unlinkDone = new ManualResetEventSlim();
            int attempts = 0;
            bool waited = false, doneBeforeCommit = true;
            var hooks = new AgRebuildTestHooks
            {
                AfterLock = a =>
                {
                    if (Interlocked.Increment(ref attempts) > 1) return;
                    unlinker = new Thread(() =>
                    {
                        try { fs.Namespace.Unlink("/r/f1"); }
                        catch (Exception e) { unlinkError = e; }
                        finally { unlinkDone.Set(); }
                    });
                    unlinker.Start();
                    SpinWait.SpinUntil(() => engine.Ag(a).Lock.Waiters > 0 || unlinkDone.IsSet, TimeSpan.FromSeconds(60));
                    waited = engine.Ag(a).Lock.Waiters > 0;
                },
                AfterSwitch = _ => doneBeforeCommit = unlinkDone.IsSet,
            };
            AgRebuildResult r = OnlineAgHeaderRepair.RepairAgi(engine, ag, hooks);
            output.WriteLine(r.ToString());
            Assert.NotNull(unlinker);
            Assert.True(unlinker.Join(TimeSpan.FromSeconds(60)), "the unlink never finished");
            Assert.Null(unlinkError);
            Assert.True(waited, "the unlink did not wait for the AG lock the rebuild held");
            Assert.False(doneBeforeCommit, "the unlink finished before the rebuild committed");
            Assert.Equal(1, attempts);
            Assert.Contains("unlinked lists: 0 inodes", r.Found, StringComparison.Ordinal);
            Assert.Equal([agino], Lists(engine, ag)[(int)(agino % 64)]);
            Assert.Equal(0u, fs.Namespace.GetAttr(victim.Handle).Links);
            AssertOnlineClean(engine, "after the unlink behind the rebuild");
            fs.Namespace.Release(victim.Handle);
            Assert.Empty(Lists(engine, ag)[(int)(agino % 64)]);
            Assert.Equal(WriteErrorKind.Stale, Assert.Throws<XfsWriteException>(() => fs.Namespace.GetAttr(victim.Handle)).Kind);
            AssertOnlineClean(engine, "after the last release");
            fs.Close();
        }
        Assert.Empty(BucketsOnDisk(image));
        WriteEngineTestSupport.AssertOraclesClean(image, "an unlink racing an AGI rebuild");
    }

    /// <summary>
    /// The last release of an open unlinked file starts while the AGI rebuild holds the AG lock; the rebuild must
    /// relink that very inode (two held inodes share its bucket, listed newest first, and the rebuild chains them in
    /// inode order), finds it locked by the release (which waits for the AG lock), restarts with the inode lock taken
    /// first, and so runs after the release: the release takes the inode off the old list and frees it, and the
    /// rebuild then lists only the other one.
    /// </summary>
    [Fact]
    public void ARebuildRacingTheLastReleaseRestartsBehindIt()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            WriteEngine engine = fs.Engine;
            var geo = engine.Geometry;
            var files = HoldAndUnlink(fs, "/q", 70, unlink: false);
            // Two files of one AG and one bucket; the others go (their last release frees them at once).
            var pair = files.GroupBy(f => (geo.InoToAgno(f.Ino), geo.InoToAgino(f.Ino) % 64)).First(g => g.Count() >= 2).Take(2).ToList();
            InodeAttributes low = pair[0].Ino < pair[1].Ino ? pair[0] : pair[1], high = pair[0].Ino < pair[1].Ino ? pair[1] : pair[0];
            uint ag = geo.InoToAgno(low.Ino), bucket = geo.InoToAgino(low.Ino) % 64;
            for (int i = 0; i < files.Count; i++)
            {
                fs.Namespace.Unlink($"/q/f{i}");
                if (files[i].Ino != low.Ino && files[i].Ino != high.Ino) fs.Namespace.Release(files[i].Handle);
            }
            List<uint> before = Lists(engine, ag)[(int)bucket];
            Assert.Equal([geo.InoToAgino(high.Ino), geo.InoToAgino(low.Ino)], before);   // newest first
            Thread? releaser = null;
            Exception? releaseError = null;
            using var releaseDone = new ManualResetEventSlim();
            int attempts = 0;
            bool waited = false, releasedBeforeCommit = false;
            var hooks = new AgRebuildTestHooks
            {
                AfterLock = a =>
                {
                    if (Interlocked.Increment(ref attempts) > 1) return;
                    releaser = new Thread(() =>
                    {
                        try { fs.Namespace.Release(low.Handle); }
                        catch (Exception e) { releaseError = e; }
                        finally { releaseDone.Set(); }
                    });
                    releaser.Start();
                    SpinWait.SpinUntil(() => engine.Ag(a).Lock.Waiters > 0 || releaseDone.IsSet, TimeSpan.FromSeconds(60));
                    waited = engine.Ag(a).Lock.Waiters > 0;
                },
                AfterSwitch = _ => releasedBeforeCommit = releaseDone.IsSet,
            };
            AgRebuildResult r = OnlineAgHeaderRepair.RepairAgi(engine, ag, hooks);
            output.WriteLine(r.ToString());
            Assert.NotNull(releaser);
            Assert.True(releaser.Join(TimeSpan.FromSeconds(60)), "the release never finished");
            Assert.Null(releaseError);
            Assert.True(waited, "the release did not wait for the AG lock the rebuild held");
            Assert.Equal(2, attempts);   // restarted once, on the inode the release held
            Assert.True(releasedBeforeCommit, "the restarted rebuild must run after the release");
            Assert.Contains("unlinked lists: 1 inodes", r.Found, StringComparison.Ordinal);
            Assert.Equal([geo.InoToAgino(high.Ino)], Lists(engine, ag)[(int)bucket]);
            Assert.Equal(WriteErrorKind.Stale, Assert.Throws<XfsWriteException>(() => fs.Namespace.GetAttr(low.Handle)).Kind);
            AssertOnlineClean(engine, "after the release and the rebuild");
            fs.Namespace.Release(high.Handle);
            Assert.Empty(Lists(engine, ag)[(int)bucket]);
            AssertOnlineClean(engine, "after the last release");
            fs.Close();
        }
        Assert.Empty(BucketsOnDisk(image));
        WriteEngineTestSupport.AssertOraclesClean(image, "a last release racing an AGI rebuild");
    }
}
