namespace Xfbtree.Storage;

// Raw page copies. Callers have already bounds-checked the byte range against MaxSize and hold a lease,
// so every page index here is < PageCount and its mapping is alive.
public sealed unsafe partial class Xfile
{
    private void CopyOut(long position, Span<byte> destination)
    {
        int pageSize = PageSize;
        int done = 0;
        while (done < destination.Length)
        {
            long offset = position + done;
            long page = offset >> pageShift;
            int inPage = (int)(offset & (pageSize - 1));
            int chunk = Math.Min(pageSize - inPage, destination.Length - done);
            Span<byte> target = destination.Slice(done, chunk);
            if (pages.IsCommitted(page))
            {
                new ReadOnlySpan<byte>(backend.PageAddress(page) + inPage, chunk).CopyTo(target);
            }
            else
            {
                // A hole: never touch it (a read fault on shmem would allocate a page).
                target.Clear();
            }
            done += chunk;
        }
    }

    private void CopyIn(long position, ReadOnlySpan<byte> source)
    {
        int pageSize = PageSize;
        int done = 0;
        while (done < source.Length)
        {
            long offset = position + done;
            long page = offset >> pageShift;
            int inPage = (int)(offset & (pageSize - 1));
            int chunk = Math.Min(pageSize - inPage, source.Length - done);
            source.Slice(done, chunk).CopyTo(new Span<byte>(backend.PageAddress(page) + inPage, chunk));
            done += chunk;
        }
    }

    private void ZeroBytes(long position, long length)
    {
        // Only called for a range inside one committed page.
        long page = position >> pageShift;
        int inPage = (int)(position & (PageSize - 1));
        new Span<byte>(backend.PageAddress(page) + inPage, (int)length).Clear();
    }
}
