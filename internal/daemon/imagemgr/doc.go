// Package imagemgr holds banger's pure image helpers: name validation,
// layer decompression, flattening OCI layers into a directory, streaming
// a directory as a tar, preparing the tree for the guest init, reading the
// OCI image config, building the read-only ext4 root filesystem, and
// putting the guest init into an ext4 someone registers.
//
// The daemon runs as root and every layer, tarball and directory it is
// given is hostile input. The rules this package keeps:
//
//   - Nothing is created, removed, changed or linked outside the staging
//     root. Every operation goes through a directory file descriptor that
//     was reached from the root one component at a time with O_NOFOLLOW,
//     and acts on its final component with O_NOFOLLOW or
//     AT_SYMLINK_NOFOLLOW (see tree.go).
//   - Symlinks inside the image are resolved as the guest would see them:
//     an absolute target starts again at the image root; a target whose
//     ".." climbs above the root is refused, not clamped.
//   - A refused entry stops the Flattener with an *EntryError that names
//     the layer and the entry and wraps errdefs.ErrInvalidArgument. The
//     caller then removes the whole staging directory; this package never
//     leaves anything outside it to clean up.
//   - The staging root must sit below a directory only its owner (root)
//     can enter: a flattened tree holds the image's setuid files and
//     device nodes with the image's owners and modes, and another local
//     user must not reach them before they are sealed into an ext4 file.
//
// The staging tree is written by this process only, so the package guards
// against symlinks and names planted by the image, not against another
// process racing it in the staging directory. TarFromDir reads a
// directory a user may still be changing and so re-checks what it opens.
package imagemgr
