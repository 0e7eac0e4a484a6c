package guestinit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/klauspost/compress/zstd"
)

// InitPath is where the guest init lives in every image; an argv whose
// first element is InitPath runs one of its built-ins.
const InitPath = "/.banger/init"

// Built-in commands, the second element of such an argv:
//
//	["/.banger/init", "untar", DEST]        extract the tar on stdin under DEST
//	["/.banger/init", "untar", "--zstd", DEST]  the same, zstd-compressed
//	["/.banger/init", "features"]           print UntarFeatures
//	["/.banger/init", "tar", SRC, PATH...]  write a tar of SRC/PATH... to stdout
//	["/.banger/init", "authorize", KEY]     authorize a user's SSH key (UserKeysPath)
//	["/.banger/init", "poweroff"]           power the guest off after replying
const (
	BuiltinUntar    = "untar"
	BuiltinTar      = "tar"
	BuiltinPoweroff = "poweroff"
	BuiltinFeatures = "features"
)

// builtinIO is what a built-in runs with.
type builtinIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	dir            string // relative paths are resolved here
	uid, gid       int    // owner of extracted files (applied when root)
	poweroff       func() // nil: poweroff is refused
	userKeys       string // the authorize built-in's file
}

// UntarFeatures lists, space-separated, what this init's untar understands
// beyond plain tar and deletions (the features built-in prints it): a
// workspace import uses a newer form only when the guest says so, since a
// VM's init is the one its image was built with. "gitpack": git packs in
// transfer form (GitPackRecord); "zstd": untar --zstd; "tar-no-git": tar
// --no-git.
const UntarFeatures = "gitpack zstd tar-no-git"

// runBuiltin runs args (the argv after InitPath) and returns its exit
// status, and what to do once that status has been reported.
func runBuiltin(args []string, bio builtinIO) (code int, after func()) {
	fail := func(code int, format string, a ...any) (int, func()) {
		fmt.Fprintf(bio.stderr, logPrefix+format+"\n", a...)
		return code, nil
	}
	if len(args) == 0 {
		return fail(2, "usage: %s untar DEST | tar SRC PATH... | poweroff", InitPath)
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(bio.dir, p)
	}
	switch args[0] {
	case BuiltinUntar:
		in := bio.stdin
		if len(args) == 3 && args[1] == "--zstd" {
			// The host's window is 4 MiB; a larger one is refused, so a
			// small guest's memory bounds what a stream can ask for.
			zr, err := zstd.NewReader(in, zstd.WithDecoderMaxWindow(16<<20), zstd.WithDecoderMaxMemory(16<<20))
			if err != nil {
				return fail(1, "untar: %v", err)
			}
			defer zr.Close()
			in, args = zr, args[1:]
		}
		if len(args) != 2 {
			return fail(2, "usage: %s untar [--zstd] DEST", InitPath)
		}
		if err := extractTar(in, abs(args[1]), bio.uid, bio.gid); err != nil {
			return fail(1, "untar: %v%s", err, spaceLeft(err, abs(args[1])))
		}
		return 0, nil
	case BuiltinFeatures:
		fmt.Fprintln(bio.stdout, UntarFeatures)
		return 0, nil
	case BuiltinTar:
		noGit := len(args) > 1 && args[1] == "--no-git"
		if noGit {
			args = args[1:]
		}
		if len(args) < 3 {
			return fail(2, "usage: %s tar [--no-git] SRC PATH...", InitPath)
		}
		if err := writeTar(bio.stdout, abs(args[1]), args[2:], noGit); err != nil {
			return fail(1, "tar: %v", err)
		}
		return 0, nil
	case BuiltinAuthorize:
		if len(args) != 2 {
			return fail(2, "usage: %s authorize 'KEYTYPE KEY [COMMENT]'", InitPath)
		}
		if err := authorizeKey(bio.userKeys, args[1]); err != nil {
			return fail(1, "authorize: %v", err)
		}
		return 0, nil
	case BuiltinPoweroff:
		if bio.poweroff == nil {
			return fail(1, "poweroff: not available here")
		}
		return 0, bio.poweroff
	}
	return fail(127, "%s: unknown built-in (have untar, tar, authorize, poweroff, features)", args[0])
}

// Untar extracts the tar stream r under dest as the untar built-in does
// (see extractTar), owned by this process's user: the receiving half of a
// workspace import, for callers and tests outside the guest.
func Untar(r io.Reader, dest string) error {
	return extractTar(r, dest, os.Geteuid(), os.Getegid())
}

// Tar writes a tar of src's paths to w as the tar built-in does (see
// writeTar): the sending half of a workspace export, for tests outside the
// guest.
func Tar(w io.Writer, src string, paths ...string) error {
	return writeTar(w, src, paths, false)
}

// startBuiltin runs a built-in in the init itself, on the channel.
func (sess *session) startBuiltin(c *command) *job {
	// Buffered: each write to the channel is an SSH packet, and the tar
	// built-in writes a header and a small file at a time (20,000 files
	// took 29 s to send instead of ~9 under emulation).
	stdout := bufio.NewWriterSize(sess.ch, 64<<10)
	bio := builtinIO{
		stdin:    sess.ch,
		stdout:   stdout,
		stderr:   sess.ch.Stderr(),
		dir:      c.dir,
		uid:      int(c.user.UID),
		gid:      int(c.user.GID),
		poweroff: sess.srv.cfg.Poweroff,
		userKeys: sess.srv.cfg.UserKeysFile,
	}
	return &job{wait: func() exitResult {
		code, after := runBuiltin(c.argv[1:], bio)
		if err := stdout.Flush(); err != nil && code == 0 {
			code = 1 // the reader went away; nothing more can be said to it
		}
		return exitResult{code: code, after: after}
	}}
}

// runTool runs a built-in as a plain command: "/.banger/init untar DEST"
// typed in the guest does what the SSH built-in does.
func runTool(args []string) int {
	dir, _ := os.Getwd()
	code, after := runBuiltin(args, builtinIO{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		dir: dir, uid: os.Geteuid(), gid: os.Getegid(), userKeys: UserKeysPath,
		poweroff: requestPoweroff,
	})
	if after != nil {
		after()
	}
	return code
}

// spaceLeft says, for an error of a full file system, what is left on the
// one holding dest: it may be inodes, not bytes, that ran out (a free
// byte count alone then makes the error look wrong).
func spaceLeft(err error, dest string) string {
	if !errors.Is(err, syscall.ENOSPC) {
		return ""
	}
	var st syscall.Statfs_t
	if syscall.Statfs(dest, &st) != nil {
		return ""
	}
	return fmt.Sprintf(" (%s has %d of %d inodes and %d MiB free)", dest, st.Ffree, st.Files, st.Bavail*uint64(st.Bsize)>>20)
}
