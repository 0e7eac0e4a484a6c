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
	"sync"
	"sync/atomic"
	"syscall"

	"banger/internal/daemon/imagemgr"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/system"
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

// Exit statuses of the helper that carry a sentinel back to the daemon;
// any other failure exits 1. Its stderr holds the message.
const (
	callerReadNotFound = 3
	callerReadInvalid  = 4
)

// callerStream is an opened caller file or directory. Close is safe to
// call more than once; it stops whatever still produces the stream.
type callerStream struct {
	io.Reader
	IsDir bool

	closeOnce sync.Once
	close     func() error
	closeErr  error
}

func (s *callerStream) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

// open opens path for reading as peer. Directories come as tar streams.
// ctx bounds the opening only: the stream belongs to whoever reads it
// (an import's operation reads on after the request that opened it has
// returned), and Close ends it.
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
	// Not CommandContext: the helper must outlive the request.
	cmd := exec.Command(cf.exe, "internal", "read", "--", path)
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: peer.UID, Gid: peer.GID, Groups: groups}}
	stderr := &system.HeadBuffer{Max: 4096}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s as uid %d to read %s: %w", cf.exe, peer.UID, path, err)
	}
	wait := func() error {
		err := cmd.Wait()
		if err == nil {
			return nil
		}
		msg := string(bytes.TrimSpace(stderr.Bytes()))
		var ee *exec.ExitError
		if errors.As(err, &ee) && msg != "" {
			switch ee.ExitCode() {
			case callerReadNotFound:
				return &helperError{msg: msg, kind: errdefs.ErrNotFound}
			case callerReadInvalid:
				return &helperError{msg: msg, kind: errdefs.ErrInvalidArgument}
			}
			return fmt.Errorf("read %s as uid %d: %s", path, peer.UID, msg)
		}
		return fmt.Errorf("read %s as uid %d: %w", path, peer.UID, err)
	}
	// The request may end while the helper is still opening the file.
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	br := bufio.NewReader(out)
	kind, err := br.ReadByte()
	if !stop() {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("read %s as uid %d: %w", path, peer.UID, context.Cause(ctx))
	}
	if err != nil {
		if werr := wait(); werr != nil {
			return nil, werr
		}
		return nil, fmt.Errorf("reader for %s sent nothing", path)
	}
	if kind != callerFileKind && kind != callerDirKind {
		cmd.Process.Kill()
		wait()
		return nil, fmt.Errorf("reader for %s sent an unknown stream kind %q", path, kind)
	}
	r := &eofReader{r: br}
	return &callerStream{Reader: r, IsDir: kind == callerDirKind, close: func() error {
		if !r.eof.Load() {
			// The reader stopped early (it failed, or had what it
			// needed): its own outcome is what counts; end the helper
			// rather than read the rest.
			cmd.Process.Kill()
			cmd.Wait()
			return nil
		}
		return wait()
	}}, nil
}

// helperError is a failure the read helper reported: its message, and the
// sentinel its exit status names.
type helperError struct {
	msg  string
	kind error
}

func (e *helperError) Error() string { return e.msg }
func (e *helperError) Unwrap() error { return e.kind }

// eofReader records that its reader reached the end.
type eofReader struct {
	r   io.Reader
	eof atomic.Bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.eof.Store(true)
	}
	return n, err
}

// openLocal opens path as this process. Anything but a regular file or a
// directory is refused before it is opened (opening a fifo would block
// until a writer came), and checked again once open.
func openLocal(path string) (*callerStream, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, userPathError(path, err)
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return nil, notFileOrDir(path)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, userPathError(path, err)
	}
	if fi, err = f.Stat(); err != nil {
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
		return nil, notFileOrDir(path)
	}
	return &callerStream{Reader: f, close: f.Close}, nil
}

func notFileOrDir(path string) error {
	return fmt.Errorf("%s is neither a regular file nor a directory: %w", path, errdefs.ErrInvalidArgument)
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
// the kind byte and then the file or a tar of the directory to stdout. It
// runs as the caller, so opening is the permission check. On failure it
// writes the reason to stderr and returns the exit status the daemon
// reads it back by (see callerFiles.open); on success it returns 0.
func ServeCallerRead(path string, stdout, stderr io.Writer) int {
	err := serveCallerRead(path, stdout)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, err)
	switch {
	case errdefs.IsNotFound(err):
		return callerReadNotFound
	case errdefs.IsInvalidArgument(err):
		return callerReadInvalid
	}
	return 1
}

func serveCallerRead(path string, w io.Writer) error {
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
	if _, err = io.Copy(w, s); err != nil {
		return err
	}
	return s.Close()
}
