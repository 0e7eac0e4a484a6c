package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"banger/internal/daemon/imagemgr"
	"banger/internal/errdefs"
	"banger/internal/rpc"
)

// callerFiles reads files a caller names (image import, register, kernel
// import) with the caller's own permissions: the daemon runs as root, and
// must never hand a group member the contents of a file they could not
// read themselves. For a caller other than root it runs
// `banger internal read PATH` as the caller's uid, gid and groups and reads
// the helper's output; the kernel enforces the permissions.
type callerFiles struct {
	exe      string // the banger binary
	procRoot string // "/proc"
}

// Stream kinds the helper announces in its first byte.
const (
	callerFileKind = 'F' // the file's bytes follow
	callerDirKind  = 'D' // a tar stream of the directory follows
)

// callerStream is an opened caller file or directory.
type callerStream struct {
	io.Reader
	IsDir bool
	close func() error
}

func (s *callerStream) Close() error { return s.close() }

// open opens path for reading as peer. Directories come as tar streams.
func (cf callerFiles) open(ctx context.Context, peer rpc.PeerCred, path string) (*callerStream, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("path %q is not absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	if peer.UID == 0 {
		return openLocal(path)
	}
	groups, err := peerGroups(filepath.Join(cf.procRoot, strconv.Itoa(int(peer.PID)), "status"))
	if err != nil {
		return nil, fmt.Errorf("read the caller's groups: %w", err)
	}
	cmd := exec.CommandContext(ctx, cf.exe, "internal", "read", "--", path)
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: peer.UID, Gid: peer.GID, Groups: groups}}
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 4096}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start reader for %s: %w", path, err)
	}
	wait := func() error {
		if err := cmd.Wait(); err != nil {
			if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
				return fmt.Errorf("%s: %w", msg, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("read %s as uid %d: %w", path, peer.UID, err)
		}
		return nil
	}
	br := bufio.NewReader(out)
	kind, err := br.ReadByte()
	if err != nil {
		return nil, wait()
	}
	if kind != callerFileKind && kind != callerDirKind {
		cmd.Process.Kill()
		wait()
		return nil, fmt.Errorf("reader for %s sent an unknown stream kind %q", path, kind)
	}
	return &callerStream{Reader: br, IsDir: kind == callerDirKind, close: func() error {
		io.Copy(io.Discard, br)
		return wait()
	}}, nil
}

func openLocal(path string) (*callerStream, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, userPathError(path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.IsDir() {
		f.Close()
		tr := imagemgr.TarFromDir(path)
		return &callerStream{Reader: tr, IsDir: true, close: tr.Close}, nil
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is neither a regular file nor a directory: %w", path, errdefs.ErrInvalidArgument)
	}
	return &callerStream{Reader: f, close: f.Close}, nil
}

func userPathError(path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist: %w", path, errdefs.ErrNotFound)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: permission denied: %w", path, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("open %s: %w", path, err)
}

// ServeCallerRead is the helper side: `banger internal read PATH` writes
// the kind byte and then the file or a tar of the directory to w. It runs
// as the caller, so opening is the permission check.
func ServeCallerRead(path string, w io.Writer) error {
	s, err := openLocal(path)
	if err != nil {
		return err
	}
	defer s.Close()
	kind := byte(callerFileKind)
	if s.IsDir {
		kind = callerDirKind
	}
	if _, err := w.Write([]byte{kind}); err != nil {
		return err
	}
	_, err = io.Copy(w, s)
	return err
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
