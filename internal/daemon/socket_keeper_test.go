package daemon

import (
	"context"
	"errors"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"testing"
	"time"

	"banger/internal/rpc"
)

// TestSocketDeletedUnderRunningDaemon deletes the socket file while a
// request is in flight: the daemon recreates it within seconds, with the
// same mode, owner and group; a new client connects through it; and the
// connection that was open before, and its request, are unaffected.
func TestSocketDeletedUnderRunningDaemon(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	// A group other than root's, so that keeping the group is seen. The
	// daemon would create a missing group; the test uses one that exists.
	g, err := user.LookupGroup("daemon")
	if err != nil {
		t.Skipf("needs the group \"daemon\" (present on Debian) so the socket's group differs from root's: %v", err)
	}
	wantGID, _ := strconv.Atoi(g.Gid)
	cfg.Group = "daemon"
	r := startDaemon(t, cfg)
	started, release := make(chan struct{}), make(chan struct{})
	r.d.requestHandler = func(ctx context.Context, call *rpc.Call) (any, error) {
		if call.Method != "test.slow" {
			return r.d.dispatch(ctx, call)
		}
		close(started)
		<-release
		return "finished", nil
	}
	before := dialDaemon(t, cfg)
	var out string
	errc := make(chan error, 1)
	go func() { errc <- before.Call(context.Background(), "test.slow", nil, &out) }()
	<-started
	old, err := statID(cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(cfg.Socket); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	var c *rpc.Client
	for c == nil {
		if cc, err := rpc.Dial(context.Background(), cfg.Socket); err == nil {
			c = cc
		} else if time.Since(begin) > 5*time.Second {
			t.Fatalf("no client could connect 5s after the socket file was deleted: %v", err)
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer c.Close()
	t.Logf("a new client connected %v after the socket file was deleted", time.Since(begin).Round(time.Millisecond))
	if err := c.Call(context.Background(), rpc.MethodPing, nil, nil); err != nil {
		t.Errorf("ping through the recreated socket: %v", err)
	}
	fi, err := os.Lstat(cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 || st.Uid != 0 || int(st.Gid) != wantGID {
		t.Errorf("recreated socket is %v %d:%d, want a socket 0660 0:%d", fi.Mode(), st.Uid, st.Gid, wantGID)
	}
	if now, _ := statID(cfg.Socket); now == old {
		t.Errorf("the socket file has the deleted one's inode")
	}

	// The connection made before: its request in flight finishes, and it
	// takes new ones.
	close(release)
	if err := <-errc; err != nil || out != "finished" {
		t.Errorf("the request in flight across the deletion = %q, %v; want finished", out, err)
	}
	if err := before.Call(context.Background(), rpc.MethodPing, nil, nil); err != nil {
		t.Errorf("ping on the connection made before the deletion: %v", err)
	}
}

// TestSocketKeeperLeavesForeignFile: a file someone else put at the
// socket path is not removed, and the daemon keeps serving the
// connections it has.
func TestSocketKeeperLeavesForeignFile(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	startDaemon(t, cfg)
	c := dialDaemon(t, cfg)
	if err := os.Remove(cfg.Socket); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Socket, []byte("not a socket\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * socketCheckInterval)
	if data, err := os.ReadFile(cfg.Socket); err != nil || string(data) != "not a socket\n" {
		t.Errorf("the file at the socket path is now %q, %v; want it left alone", data, err)
	}
	if err := c.Call(context.Background(), rpc.MethodPing, nil, nil); err != nil {
		t.Errorf("ping on an open connection: %v", err)
	}
	if _, err := rpc.Dial(context.Background(), cfg.Socket); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dialing a regular file = %v, want a refusal", err)
	}
	os.Remove(cfg.Socket)
}

// TestSocketDeletedBeforeServe: a socket file deleted between Open and
// Serve is recreated like one deleted later. Serve used to take the file's
// identity itself and fail on a missing one, leaving connections already
// queued on the listener unanswered (a hang seen once in CI).
func TestSocketDeletedBeforeServe(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	d, err := Open(context.Background(), Options{Config: cfg})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	allowStandInInit(d)
	queued, err := rpc.Dial(context.Background(), cfg.Socket) // accepted by the kernel, not yet served
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	if err := os.Remove(cfg.Socket); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Serve(ctx) }()
	t.Cleanup(func() { r.stop(t) })

	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	if err := queued.Call(pctx, rpc.MethodPing, nil, nil); err != nil {
		t.Fatalf("ping on the connection queued before Serve: %v", err)
	}
	deadline := time.Now().Add(3 * socketCheckInterval)
	for {
		c, err := rpc.Dial(pctx, cfg.Socket)
		if err == nil {
			err = c.Call(pctx, rpc.MethodPing, nil, nil)
			c.Close()
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the socket was not recreated: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
