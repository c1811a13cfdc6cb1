namespace Xfbtree.Xfs.Format;

/// <summary>
/// The input is not a usable XFS v5 image, or a header needed to go on is damaged. The message is one line that
/// names the cause (the command-line tool prints it as is and exits with 2).
/// </summary>
public class XfsFormatException : Exception
{
    /// <summary>Creates the exception with its one-line <paramref name="message"/>.</summary>
    public XfsFormatException(string message) : base(message) { }
    /// <summary>Creates the exception with its one-line <paramref name="message"/> and the failure that caused it.</summary>
    public XfsFormatException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A valid XFS filesystem that this tool does not handle (v4, no rmapbt, unknown incompat feature, realtime, ...).</summary>
public sealed class XfsUnsupportedException : XfsFormatException
{
    /// <summary>Creates the exception with its one-line <paramref name="message"/> naming what is not supported.</summary>
    public XfsUnsupportedException(string message) : base(message) { }
}
