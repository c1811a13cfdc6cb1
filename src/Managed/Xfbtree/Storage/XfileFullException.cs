namespace Xfbtree.Storage;

/// <summary>The xfile reached its <see cref="XfileOptions.CommitLimit"/>; nothing was committed.</summary>
public sealed class XfileFullException : IOException
{
    /// <summary>Creates the exception.</summary>
    public XfileFullException() : base("xfile commit limit reached") { }

    /// <summary>Creates the exception with a message.</summary>
    public XfileFullException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public XfileFullException(string message, Exception innerException) : base(message, innerException) { }
}
