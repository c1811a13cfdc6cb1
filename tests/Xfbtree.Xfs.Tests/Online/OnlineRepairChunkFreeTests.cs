using Xfbtree.Cli.Stress;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// Online repairs while inode chunks come and go: a writer creates 130 files in a directory and removes them all,
/// over and over (a new chunk allocated, then freed with its blocks and OWN_INODES rmap, each cycle), while the
/// rotation rebuilds every AG's rmapbt (live hooks see the OWN_INODES unmaps), its inobt and finobt, and checks the
/// link counts (the scanner meets inodes whose chunk is gone); each rebuild is compared with an offline scan, or
/// scrubbed, with commits paused: 0 mismatches, no failure; afterwards invariants and `xfs_repair -n` clean.
/// </summary>
public sealed class OnlineRepairChunkFreeTests(ITestOutputHelper output)
{
    [Fact]
    public void RepairsRacingChunkFreesStayExact()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        var rotation = new OnlineRepairRotation(fs, verify: true,
            OnlineRepairStructures.Rmapbt | OnlineRepairStructures.Inobt | OnlineRepairStructures.Finobt | OnlineRepairStructures.Nlinks);
        int cycles = 0;
        bool done = false;
        Exception? writerFailure = null;
        var writer = new Thread(() =>
        {
            try
            {
                for (; cycles < 200 && (cycles < 6 || rotation.Repairs < 8 || rotation.NlinkChecks < 2); cycles++)
                {
                    string dir = $"/w{cycles}";
                    fs.Mkdir(dir);
                    for (int i = 0; i < 130; i++) fs.Create($"{dir}/{i}");
                    for (int i = 0; i < 130; i++) fs.Unlink($"{dir}/{i}");
                    fs.Rmdir(dir);
                }
            }
            catch (Exception e)
            {
                writerFailure = e;
            }
            finally
            {
                Volatile.Write(ref done, true);
            }
        });
        writer.Start();
        rotation.Run(() => Volatile.Read(ref done));
        writer.Join();
        long freed = fs.Namespace.ChunksFreed;
        output.WriteLine($"{cycles} cycles, {freed} chunks freed; {rotation.Repairs} rmapbt repairs, {rotation.NlinkChecks} link count checks, {rotation.Mismatches} mismatches");
        Assert.Null(writerFailure);
        Assert.Empty(rotation.Failures);
        Assert.Equal(0, rotation.Mismatches);
        Assert.True(freed >= cycles, $"{freed} chunks freed in {cycles} cycles");
        Assert.True(rotation.Repairs >= 8, $"only {rotation.Repairs} repairs");
        WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the race");
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after the race");
    }
}
