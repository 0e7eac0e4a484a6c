package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"banger/internal/rpc"
)

// socketCheckInterval is how often the daemon checks that its socket file
// is still there: one lstat.
const socketCheckInterval = time.Second

// socketKeeper serves the API on the socket and keeps the socket file in
// place: when someone deletes it (a tmpfiles cleaner, a careless rm) the
// daemon would otherwise run on, unreachable. A check that finds the file
// gone listens again at the same path with the same mode, owner and group
// (listen), serves the new listener with the same server (so the same
// SO_PEERCRED checks), and retires the old one; connections already
// accepted are untouched.
type socketKeeper struct {
	path   string
	gid    uint32
	srv    *rpc.Server
	logger *slog.Logger
	errs   chan error // a listener failed other than by being closed

	// Owned by the goroutine that calls check (after serve starts it).
	cur      *net.UnixListener
	curFile  fileID // the socket file cur listens on
	replaced bool   // a foreign file at the path was already logged

	wg sync.WaitGroup // Serve goroutines
}

// fileID names a file across renames: device and inode.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("stat %s: no device and inode", path)
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

func newSocketKeeper(path string, gid uint32, l *net.UnixListener, file fileID, srv *rpc.Server, logger *slog.Logger) *socketKeeper {
	return &socketKeeper{path: path, gid: gid, srv: srv, logger: logger, errs: make(chan error, 1), cur: l, curFile: file}
}

// start serves the first listener.
func (k *socketKeeper) start() { k.serve(k.cur) }

func (k *socketKeeper) serve(l *net.UnixListener) {
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		err := k.srv.Serve(l)
		if errors.Is(err, rpc.ErrServerClosed) {
			l.Close() // Serve may refuse l without closing it
			return
		}
		if err != nil {
			select {
			case k.errs <- err:
			default:
			}
		}
	}()
}

// tick checks the socket file once (Serve runs it every
// socketCheckInterval).
func (k *socketKeeper) tick(ctx context.Context) {
	if err := k.check(ctx); err != nil && ctx.Err() == nil {
		k.logger.Error("the socket file is gone and could not be recreated", "socket", k.path, "err", err)
	}
}

// check recreates the socket file if it is gone. A different file at the
// path (another daemon's socket, say) is left alone and logged once.
func (k *socketKeeper) check(ctx context.Context) error {
	id, err := statID(k.path)
	switch {
	case err == nil && id == k.curFile:
		return nil
	case err == nil:
		if !k.replaced {
			k.replaced = true
			k.logger.Warn("the socket path now holds another file; leaving it alone (clients reach this daemon no more)", "socket", k.path)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	l, err := listen(ctx, k.path, k.gid)
	if err != nil {
		return err
	}
	if id, err = statID(k.path); err != nil {
		l.Close()
		return err
	}
	old := k.cur
	k.cur, k.curFile, k.replaced = l, id, false
	k.serve(l)
	k.srv.CloseListener(old)
	k.logger.Warn("the socket file was deleted; recreated it", "socket", k.path)
	return nil
}

// wait awaits the Serve goroutines; the server must be shut down.
func (k *socketKeeper) wait() { k.wg.Wait() }
