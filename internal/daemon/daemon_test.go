package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"banger/internal/config"
	"banger/internal/daemon/opstate"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// needRoot skips tests that create root-owned sockets and chown them.
func needRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration tier (a real daemon on a socket); skipped in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the daemon chowns its socket to root:group")
	}
}

// testConfig is a config on a fresh short temp dir (unix socket paths must
// stay under 108 bytes), with group root so no group is created.
func testConfig(t testing.TB) config.Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := config.Default()
	cfg.Root = filepath.Join(dir, "root")
	cfg.Socket = filepath.Join(dir, "s.sock")
	cfg.Group = "root"
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	return cfg
}

// running is a daemon serving in the background.
type running struct {
	d      *Daemon
	cfg    config.Config
	cancel context.CancelFunc
	done   chan error
}

func startDaemon(t testing.TB, cfg config.Config) *running {
	t.Helper()
	return startDaemonWith(t, Options{Config: cfg})
}

// startDaemonWith is startDaemon with Open's other options.
func startDaemonWith(t testing.TB, opts Options) *running {
	t.Helper()
	cfg := opts.Config
	d, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	allowStandInInit(d)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: d, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Serve(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if err := r.d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func dialDaemon(t testing.TB, cfg config.Config) *rpc.Client {
	t.Helper()
	c, err := rpc.Dial(context.Background(), cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestOpenServeClose(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	r := startDaemon(t, cfg)
	fi, err := os.Stat(cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want socket 0660", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
		t.Fatalf("socket owned %d:%d, want 0:0 (root:root as configured)", st.Uid, st.Gid)
	}
	pid, err := os.ReadFile(filepath.Join(cfg.Root, "banger.pid"))
	if err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("pid file = %q, %v; want our pid", pid, err)
	}

	c := dialDaemon(t, cfg)
	ctx := context.Background()
	if p, err := c.Ping(ctx); err != nil || p.PID != os.Getpid() {
		t.Fatalf("ping = %+v, %v", p, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Root != cfg.Root || info.Socket != cfg.Socket || info.SchemaVersion < 1 || info.GoVersion == "" {
		t.Fatalf("info = %+v", info)
	}
	vms, err := c.ListVMs(ctx)
	if err != nil || vms == nil || len(vms) != 0 {
		t.Fatalf("ListVMs = %#v, %v; want an empty non-nil list", vms, err)
	}
	if err := c.Call(ctx, rpc.MethodVMList, map[string]int{"bogus": 1}, nil); rpcCode(err) != rpc.CodeInvalidParams {
		t.Fatalf("vm.list with a stray param = %v, want -32602", err)
	}
	if err := c.Call(ctx, "vm.nonesuch", nil, nil); rpcCode(err) != rpc.CodeMethodNotFound {
		t.Fatalf("unknown method = %v, want -32601", err)
	}

	r.stop(t)
	for _, p := range []string{cfg.Socket, filepath.Join(cfg.Root, "banger.pid")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close (%v)", p, err)
		}
	}
}

func rpcCode(err error) int {
	var re *rpc.Error
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

func TestSecondDaemonOnSameRootIsRefused(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	startDaemon(t, cfg)
	before, err := os.Stat(cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	second := cfg
	second.Socket = filepath.Join(filepath.Dir(cfg.Socket), "other.sock")
	_, err = Open(context.Background(), Options{Config: second})
	if !errors.Is(err, errdefs.ErrBusy) || !strings.Contains(err.Error(), "already running") || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second Open = %v, want busy naming the first daemon's pid", err)
	}
	if _, err := os.Lstat(second.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the refused daemon created its socket")
	}
	after, err := os.Stat(cfg.Socket)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("first daemon's socket changed: %v", err)
	}
	pid, _ := os.ReadFile(filepath.Join(cfg.Root, "banger.pid"))
	if strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("pid file = %q after the refused start", pid)
	}
	if _, err := dialDaemon(t, cfg).Ping(context.Background()); err != nil {
		t.Fatalf("first daemon no longer answers: %v", err)
	}
}

func TestSecondDaemonOnSameSocketIsRefused(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	startDaemon(t, cfg)
	second := cfg
	second.Root = cfg.Root + "2"
	_, err := Open(context.Background(), Options{Config: second})
	if !errors.Is(err, errdefs.ErrBusy) || !strings.Contains(err.Error(), cfg.Socket) {
		t.Fatalf("second Open = %v, want busy naming the socket", err)
	}
	if _, err := os.Lstat(filepath.Join(second.Root, "banger.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the refused daemon left its pid file")
	}
	if _, err := dialDaemon(t, cfg).Ping(context.Background()); err != nil {
		t.Fatalf("first daemon no longer answers: %v", err)
	}
}

func TestStaleSocketAndStagingAreCleaned(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	// A crashed daemon left a socket nobody listens on and a half-made
	// staging tree.
	if err := os.MkdirAll(filepath.Join(cfg.Root, "staging", "pull-123", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Root, "staging", "pull-123", "rootfs", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Socket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, cfg)
	entries, err := os.ReadDir(filepath.Join(cfg.Root, "staging"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("staging after Open = %v, %v; want empty", entries, err)
	}
	if _, err := dialDaemon(t, cfg).Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOpWatchStreamsProgressToTheEnd(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	r := startDaemon(t, cfg)
	release := make(chan struct{})
	id, err := r.d.startOp(context.Background(), "test.count", "thing", func(ctx context.Context, report func(opstate.Progress)) (any, error) {
		<-release
		for i := 1; i <= 5; i++ {
			report(opstate.Progress{Phase: "count", Done: int64(i), Total: 5, Unit: "steps"})
			time.Sleep(5 * time.Millisecond)
		}
		return map[string]int{"counted": 5}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := dialDaemon(t, cfg)
	var seen []rpc.Op
	var mu sync.Mutex
	watchErr := make(chan error, 1)
	var final rpc.Op
	go func() {
		var err error
		final, err = c.WatchOp(context.Background(), id, func(op rpc.Op) {
			mu.Lock()
			seen = append(seen, op)
			mu.Unlock()
		})
		watchErr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if err := <-watchErr; err != nil {
		t.Fatal(err)
	}
	if final.State != "succeeded" || string(final.Result) != `{"counted":5}` {
		t.Fatalf("final = %+v", final)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Fatalf("saw %d progress events, want the initial one and more", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Seq <= seen[i-1].Seq {
			t.Fatalf("seq not increasing: %d then %d", seen[i-1].Seq, seen[i].Seq)
		}
	}
	if last := seen[len(seen)-1]; last.State != "succeeded" {
		t.Fatalf("last event state %q, want succeeded", last.State)
	}
	// The store row records the outcome.
	row, err := r.d.store.GetOperation(context.Background(), id)
	if err != nil || row.State != store.OpSucceeded || row.Phase != "count" {
		t.Fatalf("store row = %+v, %v", row, err)
	}
	ops, err := c.ListOps(context.Background())
	if err != nil || len(ops) != 1 || ops[0].ID != id {
		t.Fatalf("op.list = %+v, %v", ops, err)
	}
}

func TestOpCancel(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	r := startDaemon(t, cfg)
	id, err := r.d.startOp(context.Background(), "test.block", "thing", func(ctx context.Context, report func(opstate.Progress)) (any, error) {
		report(opstate.Progress{Phase: "blocking"})
		<-ctx.Done()
		return nil, ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	c := dialDaemon(t, cfg)
	ctx := context.Background()
	if err := c.CancelOp(ctx, id); err != nil {
		t.Fatal(err)
	}
	final, err := c.WatchOp(ctx, id, nil)
	if err != nil || final.State != "canceled" {
		t.Fatalf("after cancel: %+v, %v", final, err)
	}
	if err := c.CancelOp(ctx, id); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("cancel of a finished op = %v, want failed precondition", err)
	}
	if _, err := c.GetOp(ctx, "nonesuch"); !errdefs.IsNotFound(err) {
		t.Fatalf("op.get of an unknown id = %v, want not found", err)
	}
	if err := c.Call(ctx, rpc.MethodOpGet, map[string]string{}, nil); rpcCode(err) != rpc.CodeInvalidParams {
		t.Fatalf("op.get without id = %v, want -32602", err)
	}
}

// An op a daemon stop cut short is reported as interrupted after restart.
func TestInterruptedOpIsReportedAfterRestart(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.Root, 0o711); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(context.Background(), filepath.Join(cfg.Root, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOperation(context.Background(), store.Operation{ID: "op1", Kind: "image.pull", Target: "debian", State: store.OpRunning, Phase: "layers"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	startDaemon(t, cfg)
	c := dialDaemon(t, cfg)
	op, err := c.GetOp(context.Background(), "op1")
	if err != nil || op.State != "interrupted" || op.Progress.Phase != "layers" || op.Error == "" {
		t.Fatalf("op.get = %+v, %v; want interrupted with a reason", op, err)
	}
	final, err := c.WatchOp(context.Background(), "op1", nil)
	if err != nil || final.State != "interrupted" {
		t.Fatalf("op.watch = %+v, %v", final, err)
	}
}

func TestShutdownLetsInFlightRequestsFinish(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	r := startDaemon(t, cfg)
	started := make(chan struct{})
	r.d.requestHandler = func(ctx context.Context, call *rpc.Call) (any, error) {
		if call.Method != "test.slow" {
			return r.d.dispatch(ctx, call)
		}
		close(started)
		select {
		case <-time.After(300 * time.Millisecond):
			return "finished", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := dialDaemon(t, cfg)
	var out string
	errc := make(chan error, 1)
	go func() { errc <- c.Call(context.Background(), "test.slow", nil, &out) }()
	<-started
	r.stop(t)
	if err := <-errc; err != nil || out != "finished" {
		t.Fatalf("in-flight request during shutdown = %q, %v; want finished", out, err)
	}
}

func TestShutdownTimeoutCancelsStuckRequests(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	cfg.ShutdownTimeout = config.Duration(100 * time.Millisecond)
	r := startDaemon(t, cfg)
	started := make(chan struct{})
	r.d.requestHandler = func(ctx context.Context, call *rpc.Call) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, errdefs.ErrCanceled
	}
	c := dialDaemon(t, cfg)
	errc := make(chan error, 1)
	go func() { errc <- c.Call(context.Background(), "test.stuck", nil, nil) }()
	<-started
	begin := time.Now()
	r.stop(t)
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("shutdown took %s with a 100ms timeout", d)
	}
	if err := <-errc; !errdefs.IsCanceled(err) {
		t.Fatalf("stuck request = %v, want canceled", err)
	}
}

func TestTwoHundredConcurrentClients(t *testing.T) {
	needRoot(t)
	cfg := testConfig(t)
	startDaemon(t, cfg)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := rpc.Dial(context.Background(), cfg.Socket)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for range 3 {
				if _, err := c.ListVMs(context.Background()); err != nil {
					errs <- err
					return
				}
				if _, err := c.Info(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// allowStandInInit lets images take the test binary or a stand-in file as
// their init: these tests never boot them. (TestStaticInitCheck covers the
// real check.)
func allowStandInInit(d *Daemon) { d.images.checkInit = func(string) error { return nil } }
