namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// Test seam (internal, set through <see cref="WriteEngineOptions"/> by the test assemblies only; nothing in the
/// shipped library creates one): asked before every write the engine makes to the image or its journal, so a test
/// can stop the writes at a chosen point as a crash would. The crash injector itself lives in the tests.
/// </summary>
internal abstract class WriteFaultHook
{
    /// <summary>Called before each write; throws to stop the write (and every later one) from happening.</summary>
    public abstract void BeforeWrite();

    /// <summary>True when <paramref name="exception"/> is this hook's own crash signal, which the engine passes to
    /// its caller unchanged instead of translating it into an <see cref="XfsWriteException"/>.</summary>
    public abstract bool IsCrash(Exception exception);
}
