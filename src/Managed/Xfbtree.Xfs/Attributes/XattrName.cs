using System.Text;

namespace Xfbtree.Xfs.Attributes;

/// <summary>The namespaces of extended attributes the engine handles.</summary>
internal enum XattrNamespace : byte
{
    /// <summary>"user.": no flag on disk.</summary>
    User = 0,
    /// <summary>"trusted.": XFS_ATTR_ROOT.</summary>
    Trusted = AttrFormat.FlagRoot,
    /// <summary>"security.": XFS_ATTR_SECURE (SELinux labels, file capabilities).</summary>
    Security = AttrFormat.FlagSecure,
}

/// <summary>
/// Why a name given to an xattr call cannot be used, with the errno the kernel returns for it.
/// </summary>
internal enum XattrNameProblem
{
    /// <summary>The name is usable.</summary>
    None,
    /// <summary>Empty or longer than 255 bytes (XATTR_NAME_MAX): ERANGE.</summary>
    BadLength,
    /// <summary>A known prefix with nothing after it, e.g. "user.": EINVAL.</summary>
    EmptySuffix,
    /// <summary>A prefix the engine does not store ("system.", none at all): EOPNOTSUPP.</summary>
    UnsupportedNamespace,
}

/// <summary>
/// A full extended-attribute name as the syscalls take it ("user.mime", "security.selinux") split into its
/// namespace and the bytes XFS stores, and back.
/// </summary>
/// <param name="Namespace">The namespace (from the prefix).</param>
/// <param name="Name">The name after the prefix, as XFS stores it.</param>
internal readonly record struct XattrName(XattrNamespace Namespace, byte[] Name)
{
    /// <summary>Longest full name the syscalls accept (XATTR_NAME_MAX).</summary>
    public const int MaxFullNameLength = 255;

    static readonly byte[] UserPrefix = "user."u8.ToArray(), TrustedPrefix = "trusted."u8.ToArray(), SecurityPrefix = "security."u8.ToArray();

    /// <summary>The prefix of a namespace, e.g. "user.".</summary>
    public static ReadOnlySpan<byte> Prefix(XattrNamespace ns) => ns switch
    {
        XattrNamespace.Trusted => TrustedPrefix,
        XattrNamespace.Security => SecurityPrefix,
        _ => UserPrefix,
    };

    /// <summary>Splits a full name; <paramref name="problem"/> says why it is refused (then the result is default).</summary>
    public static XattrName Parse(ReadOnlySpan<byte> fullName, out XattrNameProblem problem)
    {
        problem = XattrNameProblem.None;
        if (fullName.Length == 0 || fullName.Length > MaxFullNameLength)
        {
            problem = XattrNameProblem.BadLength;
            return default;
        }
        foreach (var ns in new[] { XattrNamespace.User, XattrNamespace.Trusted, XattrNamespace.Security })
        {
            var prefix = Prefix(ns);
            if (!fullName.StartsWith(prefix)) continue;
            if (fullName.Length == prefix.Length)
            {
                problem = XattrNameProblem.EmptySuffix;
                return default;
            }
            return new XattrName(ns, fullName[prefix.Length..].ToArray());
        }
        problem = XattrNameProblem.UnsupportedNamespace;
        return default;
    }

    /// <summary>The on-disk namespace flags of this name.</summary>
    public byte Flags => (byte)Namespace;

    /// <summary>The namespace of on-disk entry flags, or null for flags the engine does not expose (parent pointers, both bits).</summary>
    public static XattrNamespace? NamespaceOf(byte flags) => (flags & AttrFormat.NamespaceMask) switch
    {
        0 => XattrNamespace.User,
        AttrFormat.FlagRoot => XattrNamespace.Trusted,
        AttrFormat.FlagSecure => XattrNamespace.Security,
        _ => null,
    };

    /// <summary>The full name as the syscalls show it, e.g. "user.mime".</summary>
    public string FullName => Encoding.UTF8.GetString(Prefix(Namespace)) + Encoding.UTF8.GetString(Name);

    /// <summary>Writes prefix + name into <paramref name="destination"/>; returns the bytes written.</summary>
    public int WriteFullName(Span<byte> destination)
    {
        var prefix = Prefix(Namespace);
        prefix.CopyTo(destination);
        Name.CopyTo(destination[prefix.Length..]);
        return prefix.Length + Name.Length;
    }

    /// <summary>Length of prefix + name.</summary>
    public int FullNameLength => Prefix(Namespace).Length + Name.Length;
}
