// Package workspace holds the workspace helpers: git inspection, copy
// preparation for the guest, and bringing the guest's work back. It is a
// leaf: pure functions over io.Reader/io.Writer and a Git runner (argv
// only, -z and "--" everywhere), no daemon state, no guest I/O of its own.
//
// # Import (workspace prepare)
//
// Inspect finds the checkout a path is in: its root, HEAD commit, branch
// or detached HEAD, dirty and untracked files, submodules, and notes for
// the user. A path outside any checkout is a plain directory (IsGit false,
// said in Notes): every file is imported, there is no base and no export.
//
// Pack writes a tar for the guest init's untar built-in (GuestUntarArgv;
// the image needs no tar or git), the work tree first and the git
// directories last, and returns a Manifest: the base commit
// and, per entry, path, mode, size, SHA-256 of the content and the host
// stat it was hashed at. The files are
//
//   - tracked plus untracked-not-ignored files (git ls-files -z --cached
//     --others --exclude-standard: .gitignore, info/exclude and the user's
//     excludes file apply), minus tracked files deleted from the work tree;
//     regular files with their permission bits, symlinks as symlinks (never
//     followed, wherever they point; a file below a symlinked directory is
//     left out);
//   - initialised submodules: their own selection and their git directory
//     (the gitdir file, and .git/modules/... with the rest of .git); an
//     uninitialised one is its empty directory, as on the host; an
//     untracked nested repository is left out, with a note;
//   - the guest's .git, described next.
//
// Names are bytes: spaces, newlines, leading dashes and non-UTF-8 work
// (the manifest's JSON carries a non-UTF-8 path base64-encoded).
// Contents are streamed and hashed on the way, so memory does not grow
// with file sizes.
//
// Incremental: given the previous manifest, a file whose stat (inode,
// device, size, mtime, ctime) is unchanged is not read; one whose stat
// changed is hashed and sent only if its content or mode changed. Paths
// the previous manifest had and the checkout no longer has go first, in
// one entry marked by the PAX record DeletionsRecord (NUL-separated
// paths); the guest init removes them under DEST through its os.Root
// (refusing absolute names, "..", and anything reached through a symlink
// leaving DEST). The manifest describes the host's files: a file the
// guest changed and the host did not is not re-sent.
//
// # What the guest gets of .git, and why
//
// The guest's .git is the host's files, not something recomputed on the
// host: objects (packs and loose objects), refs, packed-refs, HEAD, the
// index, logs, info, shallow, and submodules' git directories; refs/ and
// objects/ even when empty (git does not take a directory without them
// for a repository, and a gc'd one often has every ref packed). One
// thing is rebuilt, in the guest: a pack whose blobs the import already
// carries as work-tree files. That is the cheapest correct choice:
//
//   - Correct: git log, status, diff and commit in the guest work on the
//     same history, and the index is the host's, so staged changes stay
//     staged, dirty files show as modified and untracked ones as untracked
//     (the stat data in it differs in the guest, so git re-hashes each file
//     once and refreshes the index; the answer is the same). Tests run
//     git status, log and diff on both sides and compare them, and git
//     fsck --full --strict and verify-pack on the guest's repository.
//   - Cheap on the wire: a young repository's pack is mostly HEAD's
//     blobs, which the guest has just received as files. Pack writes
//     such a pack in transfer form (GitPackRecord): its entries in order,
//     as they are, except each entry (whole or delta) whose object is a
//     work-tree file sent earlier in the same archive, which becomes a
//     reference to that file; the guest init writes those blobs back
//     into the pack zlib-stored, re-encodes OFS_DELTA distances, and
//     computes the index and checksum (the object names come from the
//     host, the content from the file, checked by its Adler-32). The
//     20,000-file checkout of bench/ makes a 127 MB archive instead of
//     208 MB (57 MB on the wire with zstd). The pack keeps its host
//     name, so the manifest and incremental imports
//     see the host's files; a pack's index is never sent beside a
//     rebuilt pack (an index sent again brings its pack with it).
//     Reverse indexes, bitmaps and the multi-pack index are not sent:
//     they hold offsets into packs the guest may rebuild, and git does
//     without them. A pack over 2M objects goes as it is.
//   - Cheap on the host: no git runs to make objects (a `git bundle` or
//     `pack-objects` re-deltifies history), the guest needs no git, and
//     packs are immutable, so re-imports skip them by stat. A repository
//     of loose objects sends more than a bundle would (this repository:
//     4.5 MiB loose against a 0.75 MiB bundle that took 0.27 s to make);
//     `git gc` on the host shrinks it.
//   - A shallow clone or a bundle of HEAD alone would lose history or
//     other branches; the whole .git as is would carry hooks and config.
//
// The transfer form and zstd compression of the whole stream are used
// only for a guest whose init says it understands them
// (GuestFeaturesArgv, PackOptions): a VM's init is the one its image was
// built with.
//
// Left out: hooks (code), worktrees (other checkouts), lfs (a cache of
// what is checked out), fsmonitor state, lock files, gc state,
// objects/info/alternates (a host path: Inspect notes a repository that
// relies on one). The config is rewritten (sanitizeConfig) to what decides
// how git reads the repository and compares files (core.filemode,
// core.autocrlf, extensions.*, ...), remotes and branch tracking with
// passwords stripped from URLs, and the host user's name and email; not
// credential helpers, filters, aliases or includes. A linked worktree
// becomes a plain repository in the guest: the common directory's objects
// and refs with the worktree's own HEAD and index.
//
// # Export (workspace export)
//
// Export takes the guest's work tree as a tar (GuestTreeArgv: the guest
// init's tar built-in, so it works without git in the image; without any
// .git when the init can leave them out) and, when the
// guest has git and committed, a bundle of its commits since the base
// (GuestHeadArgv, GuestBundleArgv). It makes commits on top of the base:
// the guest's commits as they are, then one commit for the work tree if it
// differs from the guest's HEAD; modifications, additions, deletions,
// renames (git sees them by content), mode changes and symlinks follow
// from recording the tree. Ignored files stay out, by the .gitignore files
// in the guest's tree and the host's info/exclude. Submodules are not
// exported: their gitlinks stay as the base (or the guest's commits) had
// them, and their files in the guest are skipped.
//
// The guest is hostile. Its tar is extracted by a strict receiver into a
// private temporary directory: an absolute name, "..", a device node or
// FIFO, a write through a symlink (or below a file) of the same archive, a
// repeated name, a hard link to anything but an earlier file, or more
// entries or bytes than Limits stops the export with ErrHostileArchive
// naming the entry. Entries inside any .git are ignored. The bundle is
// size-limited, fetched with transfer.fsckObjects, and its head must
// descend from the base. All of this happens in a scratch bare repository
// in that directory, which borrows the host's objects (alternates) and has
// none of the host's config, hooks or attributes; the commit is built with
// a temporary index there. Only when everything succeeded does the host
// repository change: the new objects are fetched into it (git fetch of the
// scratch repository's one ref, writing no ref and no FETCH_HEAD), then
// `git update-ref` creates the branch, given the old value it must find
// (none, or with Force the current tip), so a branch is never overwritten
// silently. The work tree, index, HEAD and other branches are never
// written, and a branch checked out in any worktree is refused even with
// Force. A refused export leaves no ref and no object in the host
// repository. A base the host no longer has is ErrBaseMissing. With
// ExportOptions.Patch, `git diff --binary --full-index` from the base to
// the result is written there instead, and the host repository is only
// read.
//
// # Running git
//
// Every git call goes through Git (ExecGit runs the binary with LC_ALL=C).
// The daemon runs as root and the checkout is the user's: run git as the
// calling user (or pass safe.directory), so git's ownership check passes
// and objects written by Export are the user's; ExportOptions.TempDir must
// then be readable by that user and nobody else.
package workspace
