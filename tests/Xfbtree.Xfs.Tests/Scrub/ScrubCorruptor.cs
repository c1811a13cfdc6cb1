using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// Damages one structure of an unmounted image in place with xfs_db writes (an independent writer), for the
/// scrub's corruption matrix. Each kind names the structure whose report line must say damaged.
/// </summary>
internal static class ScrubCorruptor
{
    /// <summary>One kind: the tree it targets, its name, what it does, and the finding that must report it.</summary>
    internal sealed record Kind(string Tree, string Name, string What, string Finding);

    static readonly string[] Trees = ["bnobt", "cntbt", "inobt", "finobt", "refcountbt"];

    /// <summary>Kinds of the AGI unlinked lists (AG 1's regular files and free inodes, found with xfs_db).</summary>
    static readonly (string, string)[] UnlinkedKinds =
    [
        ("unlinked-linked-head", "a bucket's head pointed at a linked regular file of its bucket"),
        ("unlinked-wrong-bucket", "a bucket's head pointed at a linked regular file that hashes to another bucket"),
        ("unlinked-free-head", "a bucket's head pointed at a free inode of its bucket"),
        ("unlinked-stale-next", "a linked regular file's di_next_unlinked set (it is on no list)"),
        ("unlinked-cycle", "two regular files of one bucket given nlink 0 and pointed at each other, the bucket at the first (a cycle)"),
        ("unlinked-leaked", "a linked regular file's nlink set to zero, on no list (leaked from the unlinked lists' view)"),
    ];

    /// <summary>Every kind of the matrix.</summary>
    public static readonly IReadOnlyList<Kind> Kinds = Build();

    static List<Kind> Build()
    {
        var k = new List<Kind>();
        foreach (string t in Trees)
        {
            string header = t is "inobt" or "finobt" ? "AGI" : "AGF";
            foreach (var (name, what) in RecordKinds(t)) k.Add(new Kind(t, name, what, t));
            k.Add(new Kind(t, "leaf-level", "the first leaf's level set to 1", t));
            k.Add(new Kind(t, "leaf-numrecs", "the first leaf's numrecs increased by one", t));
            k.Add(new Kind(t, "leaf-magic", "the first leaf's magic changed (raw write)", t));
            k.Add(new Kind(t, "leaf-crc", "the first leaf's CRC invalidated, contents intact", t));
            k.Add(new Kind(t, "leaf-sibling", "the first leaf's right sibling pointed at the root", t));
            if (t is "inobt" or "finobt")
            {
                k.Add(new Kind(t, "root-ptr", "the AGI root pointer redirected to the other inode btree's root", t));
            }
            else
            {
                k.Add(new Kind(t, "node-key", "the root node's second key startblock increased by one", t));
                k.Add(new Kind(t, "node-ptr", "the root node's second child pointer redirected to the first child", t));
            }
            foreach (var (name, what) in HeaderKinds(t)) k.Add(new Kind(t, name, what, header));
        }
        k.Add(new Kind("agfl", "agf-flcount", "agf_flcount increased by one (the list no longer describes one run of slots)", "AGFL"));
        k.Add(new Kind("agfl", "agf-fllast", "agf_fllast moved before agf_flfirst", "AGFL"));
        k.Add(new Kind("agfl", "agfl-entry", "the AGFL's first active slot pointed outside the AG", "AGFL"));
        foreach (var (tree, name, what, finding) in HeaderKinds()) k.Add(new Kind(tree, name, what, finding));
        k.Add(new Kind("nlinks", "nlink-dir-high", "a directory's nlink increased by one", "nlinks"));
        k.Add(new Kind("nlinks", "nlink-file-high", "a regular file's nlink increased by one", "nlinks"));
        k.Add(new Kind("nlinks", "nlink-file-zero", "a linked regular file's nlink set to zero", "nlinks"));
        k.Add(new Kind("nlinks", "nlink-zero-on-list", "a linked regular file's nlink set to zero and the file put on its AGI unlinked bucket (a well-formed list)", "nlinks"));
        foreach (var (name, what) in UnlinkedKinds) k.Add(new Kind("unlinked", name, what, "AGI"));
        k.Add(new Kind("dirent", "dirent-ftype", "the root's first entry (a directory) given the file type of a regular file", "nlinks"));
        k.Add(new Kind("dirent", "dirent-free", "a shortform directory's entry of a regular file pointed at a free inode of the AG", "nlinks"));
        return k;
    }

    /// <summary>Kinds of the AG headers themselves (sector magic and CRC, root pointers, levels, lengths, AGFL indexes)
    /// and of a secondary superblock: (tree, name, what, finding).</summary>
    static IEnumerable<(string, string, string, string)> HeaderKinds() =>
    [
        ("agf", "agf-magic", "the AGF's magic changed (raw write)", "AGF"),
        ("agf", "agf-crc", "the AGF's CRC invalidated, contents intact", "AGF"),
        ("agf", "agf-bnoroot", "agf_bnoroot pointed at the cntbt's root", "AGF"),
        ("agf", "agf-cntroot", "agf_cntroot pointed at the bnobt's root", "AGF"),
        ("agf", "agf-rmaproot", "agf_rmaproot pointed at the bnobt's root", "AGF"),
        ("agf", "agf-refcountroot", "agf_refcount_root pointed at the bnobt's root", "AGF"),
        ("agf", "agf-bnolevel", "agf_levels[bno] increased by one", "AGF"),
        ("agf", "agf-rmaplevel", "agf_levels[rmap] increased by one", "rmapbt"),
        ("agf", "agf-rmapblocks", "agf_rmap_blocks increased by one", "rmapbt"),
        ("agf", "agf-length", "agf_length set to 5", "AGF"),
        ("agf", "agf-flfirst", "agf_flfirst set past the AGFL's slots", "AGF"),
        ("agfl", "agfl-magic", "the AGFL's magic changed (raw write)", "AGFL"),
        ("agfl", "agfl-crc", "the AGFL's CRC invalidated, contents intact", "AGFL"),
        ("agi", "agi-magic", "the AGI's magic changed (raw write)", "AGI"),
        ("agi", "agi-crc", "the AGI's CRC invalidated, contents intact", "AGI"),
        ("agi", "agi-length", "agi_length set to 5", "AGI"),
        ("sb", "sb-magic", "the secondary superblock's magic changed (raw write)", "superblock"),
        ("sb", "sb-crc", "the secondary superblock's CRC invalidated, contents intact", "superblock"),
        ("sb", "sb-agblocks", "the secondary superblock's sb_agblocks set to 1000", "superblock"),
        ("sb", "sb-inoalignmt", "the secondary superblock's sb_inoalignmt set to 16", "superblock"),
    ];

    static string ApplyUnlinked(string image, string name, uint ag)
    {
        string[] agi = [$"agi {ag}"];
        var files = RegularFilesOfAg(image, ag);
        if (files.Count < 2) throw new InvalidOperationException($"AG {ag} has fewer than two linked regular files");
        uint a = files[0];
        string Ino(uint agino) => $"inode {Read(image, [], $"ino", $"convert agno {ag} agino {agino} ino")}";
        switch (name)
        {
            case "unlinked-linked-head": return Write(image, agi, $"unlinked[{a % 64}]", a.ToString(CultureInfo.InvariantCulture));
            case "unlinked-wrong-bucket": return Write(image, agi, $"unlinked[{(a + 1) % 64}]", a.ToString(CultureInfo.InvariantCulture));
            case "unlinked-free-head":
            {
                uint free = FreeInodeOfAg(image, ag);
                return Write(image, agi, $"unlinked[{free % 64}]", free.ToString(CultureInfo.InvariantCulture));
            }
            case "unlinked-stale-next": return Write(image, [Ino(a)], "next_unlinked", files[1].ToString(CultureInfo.InvariantCulture));
            case "unlinked-cycle":
            {
                uint b = files.FirstOrDefault(f => f != a && f % 64 == a % 64, uint.MaxValue);
                if (b == uint.MaxValue) throw new InvalidOperationException($"AG {ag} has no two linked regular files of one bucket");
                Write(image, [Ino(a)], "core.nlinkv2", "0");
                Write(image, [Ino(b)], "core.nlinkv2", "0");
                Write(image, [Ino(a)], "next_unlinked", b.ToString(CultureInfo.InvariantCulture));
                Write(image, [Ino(b)], "next_unlinked", a.ToString(CultureInfo.InvariantCulture));
                return Write(image, agi, $"unlinked[{a % 64}]", a.ToString(CultureInfo.InvariantCulture), $" (aginos {a} -> {b} -> {a}, both nlink 0)");
            }
            case "unlinked-leaked": return Write(image, [Ino(a)], "core.nlinkv2", "0", $" (agino {a})");
            default: throw new ArgumentException($"unknown kind {name}", nameof(name));
        }
    }

    /// <summary>AG inode numbers of the allocated regular files with nlink 1 in the first inobt leaf of AG <paramref name="ag"/>, ascending.</summary>
    internal static List<uint> RegularFilesOfAg(string image, uint ag)
    {
        var inUse = new List<uint>();
        foreach (var (start, free) in InobtRecords(image, ag))
            for (int i = 0; i < 64; i++)
                if (((free >> i) & 1) == 0) inUse.Add(start + (uint)i);
        var cmds = new List<string>();
        foreach (uint agino in inUse.Take(256))
        {
            cmds.Add($"convert agno {ag} agino {agino} ino");
        }
        var inos = Db(image, false, [.. cmds]).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]).ToList();
        cmds.Clear();
        foreach (string ino in inos) { cmds.Add($"inode {ino}"); cmds.Add("print core.mode core.nlinkv2"); }
        var lines = Db(image, false, [.. cmds]).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var files = new List<uint>();
        for (int i = 0; i + 1 < lines.Length && i / 2 < inos.Count; i += 2)
        {
            if (lines[i].Trim() == "core.mode = 0100644" && lines[i + 1].Trim() == "core.nlinkv2 = 1") files.Add(inUse[i / 2]);
        }
        return files;
    }

    static uint FreeInodeOfAg(string image, uint ag)
    {
        foreach (var (start, free) in InobtRecords(image, ag))
            for (int i = 0; i < 64; i++)
                if (((free >> i) & 1) != 0) return start + (uint)i;
        throw new InvalidOperationException($"AG {ag} has no free inode in its first inobt leaf");
    }

    /// <summary>(startino, free mask) of the records of AG <paramref name="ag"/>'s inobt root leaf.</summary>
    static List<(uint Start, ulong Free)> InobtRecords(string image, uint ag)
    {
        string text = Db(image, false, [$"agi {ag}", "addr root", "print recs"]);
        var list = new List<(uint, ulong)>();
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(text, @"\d+:\[(\d+),\d+,\d+,\d+,0x([0-9a-f]+)\]"))
            list.Add((uint.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), ulong.Parse(m.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture)));
        if (list.Count == 0) throw new InvalidOperationException($"no inobt records read for AG {ag}: {text}");
        return list;
    }

    static string ApplyDirent(string image, string name, uint ag)
    {
        if (name == "dirent-ftype")
        {
            long was = Read(image, ["path /"], "u3.sfdir3.list[0].filetype");
            if (was != 2) throw new InvalidOperationException($"the root's first entry has file type {was}, not a directory's");
            return Write(image, ["path /"], "u3.sfdir3.list[0].filetype", "1");
        }
        var (dir, index) = ShortformEntryOfRegularFile(image);
        uint free = FreeInodeOfAg(image, ag);
        long ino = Read(image, [], "ino", $"convert agno {ag} agino {free} ino");
        return Write(image, [$"path {dir}"], $"u3.sfdir3.list[{index}].inumber.i4", ino.ToString(CultureInfo.InvariantCulture), $" (inode {ino} is free)");
    }

    /// <summary>A shortform directory (breadth-first from the root, 4-byte inode numbers) with an entry of a regular
    /// file: its path and the entry's index.</summary>
    static (string Dir, int Index) ShortformEntryOfRegularFile(string image)
    {
        var queue = new Queue<string>(["/"]);
        for (int visited = 0; queue.Count > 0 && visited < 200; visited++)
        {
            string dir = queue.Dequeue();
            string text = Db(image, false, [$"path {dir}", "print core.format", "print u3"]);
            if (!text.Contains("(local)", StringComparison.Ordinal) || !text.Contains("i8count = 0", StringComparison.Ordinal)) continue;
            var names = System.Text.RegularExpressions.Regex.Matches(text, @"list\[(\d+)\]\.name = ""([^""]*)""");
            var types = System.Text.RegularExpressions.Regex.Matches(text, @"list\[(\d+)\]\.filetype = (\d+)");
            for (int i = 0; i < names.Count && i < types.Count; i++)
            {
                int index = int.Parse(names[i].Groups[1].Value, CultureInfo.InvariantCulture);
                if (types[i].Groups[2].Value == "1") return (dir, index);
                if (types[i].Groups[2].Value == "2") queue.Enqueue(dir.TrimEnd('/') + "/" + names[i].Groups[2].Value);
            }
        }
        throw new InvalidOperationException("no shortform directory with a regular file's entry found");
    }

    static string ApplyHeader(string image, Kind kind, uint ag)
    {
        string[] agf = [$"agf {ag}"], agi = [$"agi {ag}"], agfl = [$"agfl {ag}"], sb = [$"sb {ag}"];
        string Crc(string[] nav) { Db(image, true, [.. nav, "crc -i"]); return $"{nav[0]}: CRC invalidated"; }
        string Copy(string[] nav, string field, string from) => Write(image, nav, field, Read(image, nav, from).ToString(CultureInfo.InvariantCulture));
        return kind.Name switch
        {
            "agf-magic" => Write(image, agf, "magicnum", "0x12345678"),
            "agf-crc" => Crc(agf),
            "agf-bnoroot" => Copy(agf, "bnoroot", "cntroot"),
            "agf-cntroot" => Copy(agf, "cntroot", "bnoroot"),
            "agf-rmaproot" => Copy(agf, "rmaproot", "bnoroot"),
            "agf-refcountroot" => Copy(agf, "refcntroot", "bnoroot"),
            "agf-bnolevel" => Add(image, agf, "bnolevel", 1),
            "agf-rmaplevel" => Add(image, agf, "rmaplevel", 1),
            "agf-rmapblocks" => Add(image, agf, "rmapblocks", 1),
            "agf-length" => Write(image, agf, "length", "5"),
            "agf-flfirst" => Write(image, agf, "flfirst", "500"),
            "agfl-magic" => Write(image, agfl, "magicnum", "0x12345678"),
            "agfl-crc" => Crc(agfl),
            "agi-magic" => Write(image, agi, "magicnum", "0x12345678"),
            "agi-crc" => Crc(agi),
            "agi-length" => Write(image, agi, "length", "5"),
            "sb-magic" => Write(image, sb, "magicnum", "0x12345678"),
            "sb-crc" => Crc(sb),
            "sb-agblocks" => Write(image, sb, "agblocks", "1000"),
            "sb-inoalignmt" => Write(image, sb, "inoalignmt", "16"),
            _ => throw new ArgumentException($"unknown kind {kind.Name}", nameof(kind)),
        };
    }

    static IEnumerable<(string, string)> RecordKinds(string tree) => tree switch
    {
        "bnobt" => [("rec-blockcount", "the third record's blockcount increased by one"), ("rec-startblock", "the third record's startblock decreased by one")],
        "cntbt" => [("rec-blockcount", "the third record's blockcount increased by one"), ("rec-startblock", "the third record's startblock increased by one")],
        "refcountbt" => [("rec-refcount", "the second record's refcount increased by one"), ("rec-blockcount", "the second record's blockcount increased by one")],
        "inobt" => [("rec-freecount", "the second record's freecount increased by one"), ("rec-free", "the second record's free mask: the lowest in-use inode marked free")],
        _ => [("rec-freecount", "the first record's freecount decreased by one"), ("rec-startino", "the first record's startino moved by 64")],
    };

    static IEnumerable<(string, string)> HeaderKinds(string tree) => tree switch
    {
        "bnobt" => [("agf-freeblks", "agf_freeblks increased by one"), ("agf-btreeblks", "agf_btreeblks increased by one")],
        "cntbt" => [("agf-longest", "agf_longest decreased by one"), ("agf-cntlevel", "agf_levels[cnt] increased by one")],
        "refcountbt" => [("agf-refcount-blocks", "agf_refcount_blocks increased by one"), ("agf-refcount-level", "agf_refcount_level increased by one")],
        "inobt" => [("agi-count", "agi_count increased by 64"), ("agi-level", "agi_level increased by one")],
        _ => [("agi-freecount", "agi_freecount increased by one"), ("agi-free-level", "agi_free_level increased by one")],
    };

    /// <summary>Applies <paramref name="kind"/> to AG <paramref name="ag"/>; returns a line saying what changed. Throws when it cannot apply.</summary>
    public static string Apply(string image, Kind kind, uint ag)
    {
        if (kind.Tree == "nlinks") return Nlink(image, kind.Name, ag);
        if (kind.Tree == "unlinked") return ApplyUnlinked(image, kind.Name, ag);
        if (kind.Tree == "dirent") return ApplyDirent(image, kind.Name, ag);
        if (kind.Tree is "agf" or "agi" or "sb" || kind.Name is "agfl-magic" or "agfl-crc") return ApplyHeader(image, kind, ag);
        if (kind.Tree == "agfl")
        {
            string[] header = [$"agf {ag}"];
            switch (kind.Name)
            {
                case "agf-flcount": return Add(image, header, "flcount", 1);
                case "agf-fllast": return Write(image, header, "fllast", (Read(image, header, "flfirst") + Read(image, header, "flcount") + 5).ToString(CultureInfo.InvariantCulture));
                default: return Write(image, [$"agfl {ag}"], $"bno[{Read(image, header, "flfirst")}]", "999999");
            }
        }
        string[] root = kind.Tree switch
        {
            "bnobt" => [$"agf {ag}", "addr bnoroot"],
            "cntbt" => [$"agf {ag}", "addr cntroot"],
            "refcountbt" => [$"agf {ag}", "addr refcntroot"],
            "inobt" => [$"agi {ag}", "addr root"],
            _ => [$"agi {ag}", "addr free_root"],
        };
        string[] agf = [$"agf {ag}"], agi = [$"agi {ag}"];
        var leaf = root.ToList();
        while (Read(image, leaf, "level") > 0) leaf.Add("addr ptrs[1]");
        string[] l = [.. leaf];
        switch (kind.Name)
        {
            case "rec-blockcount" when kind.Tree == "refcountbt": return Add(image, l, "recs[2].blockcount", 1);
            case "rec-blockcount": return Add(image, l, "recs[3].blockcount", 1);
            case "rec-startblock": return Add(image, l, "recs[3].startblock", kind.Tree == "bnobt" ? -1 : 1);
            case "rec-refcount": return Add(image, l, "recs[2].refcount", 1);
            case "rec-freecount": return Add(image, l, kind.Tree == "inobt" ? "recs[2].freecount" : "recs[1].freecount", kind.Tree == "inobt" ? 1 : -1);
            case "rec-startino": return Add(image, l, "recs[1].startino", 64);
            case "rec-free":
            {
                ulong free = (ulong)Read(image, l, "recs[2].free");
                ulong inUse = ~free;
                if (inUse == 0) throw new InvalidOperationException("the record has no inode in use");
                ulong changed = free | (inUse & (ulong)-(long)inUse);
                return Write(image, l, "recs[2].free", "0x" + changed.ToString("x", CultureInfo.InvariantCulture));
            }
            case "leaf-level": return Write(image, l, "level", "1");
            case "leaf-numrecs": return Add(image, l, "numrecs", 1);
            case "leaf-magic": return Write(image, l, "magic", "0x12345678");
            case "leaf-crc": Db(image, true, [.. l, "crc -i"]); return "leaf CRC invalidated";
            case "leaf-sibling":
            {
                // The root's block number, from the header field that points at it.
                string rootField = root[1]["addr ".Length..];
                long rootBlock = Read(image, root[..1], rootField);
                return Write(image, l, "rightsib", rootBlock.ToString(CultureInfo.InvariantCulture));
            }
            case "node-key":
                if (Read(image, root, "level") == 0) throw new InvalidOperationException("the root is a leaf");
                return Add(image, root, "keys[2].startblock", 1);
            case "node-ptr":
                if (Read(image, root, "level") == 0) throw new InvalidOperationException("the root is a leaf");
                return Write(image, root, "ptrs[2]", Read(image, root, "ptrs[1]").ToString(CultureInfo.InvariantCulture));
            case "root-ptr":
            {
                string mine = kind.Tree == "inobt" ? "root" : "free_root", other = kind.Tree == "inobt" ? "free_root" : "root";
                return Write(image, agi, mine, Read(image, agi, other).ToString(CultureInfo.InvariantCulture));
            }
            case "agf-freeblks": return Add(image, agf, "freeblks", 1);
            case "agf-btreeblks": return Add(image, agf, "btreeblks", 1);
            case "agf-longest": return Add(image, agf, "longest", -1);
            case "agf-cntlevel": return Add(image, agf, "cntlevel", 1);
            case "agf-refcount-blocks": return Add(image, agf, "refcntblocks", 1);
            case "agf-refcount-level": return Add(image, agf, "refcntlevel", 1);
            case "agi-count": return Add(image, agi, "count", 64);
            case "agi-level": return Add(image, agi, "level", 1);
            case "agi-freecount": return Add(image, agi, "freecount", 1);
            case "agi-free-level": return Add(image, agi, "free_level", 1);
            default: throw new ArgumentException($"unknown kind {kind.Name}", nameof(kind));
        }
    }

    static string Nlink(string image, string name, uint ag)
    {
        ulong ino;
        if (name == "nlink-dir-high")
        {
            ino = (ulong)Read(image, ["sb 0"], "rootino");
        }
        else if (name is "nlink-file-zero" or "nlink-zero-on-list")
        {
            // A file of the AG under test: nlink 0 on no list is the AGI's finding too, and it must not blame another AG.
            uint agino = RegularFilesOfAg(image, ag)[0];
            ino = (ulong)Read(image, [], "ino", $"convert agno {ag} agino {agino} ino");
            if (name == "nlink-zero-on-list")
            {
                Write(image, [$"inode {ino}"], "core.nlinkv2", "0");
                return $"inode {ino}: " + Write(image, [$"agi {ag}"], $"unlinked[{agino % 64}]", agino.ToString(CultureInfo.InvariantCulture));
            }
        }
        else
        {
            ino = FindRegularFile(image);
        }
        string[] nav = [$"inode {ino}"];
        return name switch
        {
            "nlink-file-zero" => $"inode {ino}: " + Write(image, nav, "core.nlinkv2", "0"),
            _ => $"inode {ino}: " + Add(image, nav, "core.nlinkv2", 1),
        };
    }

    /// <summary>The first regular file found breadth-first from the root with xfs_db ls.</summary>
    static ulong FindRegularFile(string image)
    {
        var queue = new Queue<string>(["/"]);
        for (int visited = 0; queue.Count > 0 && visited < 50; visited++)
        {
            string dir = queue.Dequeue();
            foreach (string line in Db(image, false, [$"ls {dir}"]).Split('\n').Skip(1))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length < 6 || f[^1] != "(good)") continue;
                string entry = f[^2];
                if (entry is "." or "..") continue;
                if (f[2] == "regular") return ulong.Parse(f[1], CultureInfo.InvariantCulture);
                if (f[2] == "directory") queue.Enqueue(dir.TrimEnd('/') + "/" + entry);
            }
        }
        throw new InvalidOperationException("no regular file found");
    }

    static long Read(string image, IEnumerable<string> nav, string field, string? command = null)
    {
        string outp = Db(image, false, [.. nav, command ?? $"print {field}"]);
        if (command != null)
        {
            // "convert" prints "0x40043 (262211)": the decimal in parentheses.
            var m = System.Text.RegularExpressions.Regex.Match(outp, @"\((\d+)\)");
            if (!m.Success) throw new InvalidOperationException($"xfs_db {command} printed no number: {outp}");
            return long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        string line = outp.Split('\n').LastOrDefault(x => x.Contains(" = ", StringComparison.Ordinal)) ?? throw new InvalidOperationException($"xfs_db printed no {field}: {outp}");
        return ParseValue(line);
    }

    static long ParseValue(string line)
    {
        string v = line[(line.IndexOf('=', StringComparison.Ordinal) + 1)..].Trim();
        if (v == "null") return -1;
        return v.StartsWith("0x", StringComparison.Ordinal) ? (long)ulong.Parse(v[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture)
             : v.StartsWith('0') && v.Length > 1 ? Convert.ToInt64(v, 8) : long.Parse(v, CultureInfo.InvariantCulture);
    }

    static string Add(string image, string[] nav, string field, long delta)
    {
        long v = Read(image, nav, field);
        return Write(image, nav, field, (v + delta).ToString(CultureInfo.InvariantCulture), $" (was {v})");
    }

    static string Write(string image, string[] nav, string field, string value, string note = "")
    {
        // -d: write the field as asked, even where the write verifier would refuse the result; xfs_db still gives the
        // block a correct CRC, so the damage is the field alone.
        string outp = Db(image, true, [.. nav, $"write -d {field} {value}"]);
        if (outp.Contains("error", StringComparison.OrdinalIgnoreCase) || outp.Contains("failed", StringComparison.OrdinalIgnoreCase))
            throw new InvalidOperationException($"xfs_db write {field} failed: {outp}");
        return $"{string.Join("; ", nav)}: {field} = {value}{note}";
    }

    static string Db(string image, bool write, string[] commands)
    {
        var args = new List<string> { write ? "-x" : "-r" };
        foreach (string c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        var r = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args);
        return r.Stdout + r.Stderr;
    }
}
