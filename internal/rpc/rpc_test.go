package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"banger/internal/errdefs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer runs a Server on a fresh unix socket with h as its handler.
type testServer struct {
	srv  *Server
	path string
	done chan error
}

func startServer(t *testing.T, h HandlerFunc, configure ...func(*Server)) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "rpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: &Server{Handler: h}, path: path, done: make(chan error, 1)}
	for _, c := range configure {
		c(ts.srv)
	}
	go func() { ts.done <- ts.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

// echo answers "echo" with its params, "sleep" after the duration in its
// params or when cancelled, and "method not found" otherwise.
func echo(ctx context.Context, call *Call) (any, error) {
	switch call.Method {
	case "echo":
		var p struct {
			Msg string `json:"msg"`
		}
		if err := call.Bind(&p); err != nil {
			return nil, err
		}
		return p, nil
	case "sleep":
		var p struct {
			MS int `json:"ms"`
		}
		if err := call.Bind(&p); err != nil {
			return nil, err
		}
		select {
		case <-time.After(time.Duration(p.MS) * time.Millisecond):
			return "slept", nil
		case <-ctx.Done():
			return nil, fmt.Errorf("sleep: %w", errdefs.ErrCanceled)
		}
	case "notfound":
		return nil, fmt.Errorf("vm %q: %w", "x", errdefs.ErrNotFound)
	case "panic":
		panic("boom")
	}
	return nil, Errorf(CodeMethodNotFound, "method %q not found", call.Method)
}

// rawConn is a line-level client for feeding the server bad input.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := r.nc.Write([]byte(s)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

type rawResponse struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *Error          `json:"error"`
}

func (r *rawConn) recv() rawResponse {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := r.br.ReadBytes('\n')
	if err != nil {
		r.t.Fatalf("read response: %v", err)
	}
	var resp rawResponse
	if err := json.Unmarshal(line, &resp); err != nil {
		r.t.Fatalf("response %q is not JSON: %v", line, err)
	}
	return resp
}

func TestBadInputGetsProperErrors(t *testing.T) {
	ts := startServer(t, echo)
	tests := []struct {
		name   string
		line   string
		wantID string
		code   int
	}{
		{"malformed JSON", `{"jsonrpc":"2.0","id":1,"method":`, "null", CodeParseError},
		{"not JSON at all", `hello`, "null", CodeParseError},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"echo"}]`, "null", CodeInvalidRequest},
		{"empty batch", `[]`, "null", CodeInvalidRequest},
		{"scalar", `42`, "null", CodeInvalidRequest},
		{"wrong version", `{"jsonrpc":"1.0","id":2,"method":"echo"}`, "2", CodeInvalidRequest},
		{"missing version", `{"id":3,"method":"echo"}`, "3", CodeInvalidRequest},
		{"missing method", `{"jsonrpc":"2.0","id":4}`, "4", CodeInvalidRequest},
		{"method not a string", `{"jsonrpc":"2.0","id":5,"method":7}`, "5", CodeInvalidRequest},
		{"id an object", `{"jsonrpc":"2.0","id":{"a":1},"method":"echo"}`, "null", CodeInvalidRequest},
		{"params a string", `{"jsonrpc":"2.0","id":6,"method":"echo","params":"x"}`, "6", CodeInvalidRequest},
		{"unknown method", `{"jsonrpc":"2.0","id":7,"method":"nope"}`, "7", CodeMethodNotFound},
		{"wrong param type", `{"jsonrpc":"2.0","id":8,"method":"echo","params":{"msg":5}}`, "8", CodeInvalidParams},
		{"unknown param", `{"jsonrpc":"2.0","id":9,"method":"echo","params":{"msg":"a","x":1}}`, "9", CodeInvalidParams},
		{"positional params", `{"jsonrpc":"2.0","id":10,"method":"echo","params":["a"]}`, "10", CodeInvalidParams},
		{"sentinel error", `{"jsonrpc":"2.0","id":"s","method":"notfound"}`, `"s"`, CodeNotFound},
		{"handler panic", `{"jsonrpc":"2.0","id":11,"method":"panic"}`, "11", CodeInternalError},
	}
	// All on one connection: after each bad line the connection must
	// still serve a good request.
	rc := dialRaw(t, ts.path)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc.t = t
			rc.send(tt.line + "\n")
			resp := rc.recv()
			if resp.Error == nil {
				t.Fatalf("got result %s, want error %d", resp.Result, tt.code)
			}
			if resp.Error.Code != tt.code {
				t.Fatalf("error code %d (%s), want %d", resp.Error.Code, resp.Error.Message, tt.code)
			}
			if string(resp.ID) != tt.wantID {
				t.Fatalf("id %s, want %s", resp.ID, tt.wantID)
			}
			rc.send(`{"jsonrpc":"2.0","id":"ok","method":"echo","params":{"msg":"still here"}}` + "\n")
			if ok := rc.recv(); ok.Error != nil || !strings.Contains(string(ok.Result), "still here") {
				t.Fatalf("connection unusable after bad input: %+v", ok)
			}
		})
	}
}

func TestNotificationsGetNoResponse(t *testing.T) {
	ts := startServer(t, echo)
	rc := dialRaw(t, ts.path)
	rc.send(`{"jsonrpc":"2.0","method":"echo","params":{"msg":"n"}}` + "\n")
	rc.send(`{"jsonrpc":"2.0","method":"rpc.cancel","params":{"id":99}}` + "\n")
	rc.send(`{"jsonrpc":"2.0","id":1,"method":"echo","params":{"msg":"after"}}` + "\n")
	resp := rc.recv()
	if string(resp.ID) != "1" {
		t.Fatalf("first response has id %s, want 1 (notifications must not be answered)", resp.ID)
	}
}

func TestOversizeRequestClosesConnection(t *testing.T) {
	ts := startServer(t, echo, func(s *Server) { s.MaxMessageBytes = 4096 })
	rc := dialRaw(t, ts.path)
	big := `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"msg":"` + strings.Repeat("x", 10000) + `"}}` + "\n"
	go rc.nc.Write([]byte(big)) // the server may close before reading it all
	resp := rc.recv()
	if resp.Error == nil || resp.Error.Code != CodeInvalidRequest || !strings.Contains(resp.Error.Message, "4096") {
		t.Fatalf("oversize request: got %+v, want -32600 naming the limit", resp)
	}
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.br.ReadByte(); err == nil {
		t.Fatal("connection still open after an oversize request")
	}
	// A request just under the limit works.
	c := dial(t, ts.path)
	var out struct{ Msg string }
	msg := strings.Repeat("y", 3900)
	if err := c.Call(context.Background(), "echo", map[string]string{"msg": msg}, &out); err != nil || out.Msg != msg {
		t.Fatalf("request under the limit: %v", err)
	}
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientMapsCodesToSentinels(t *testing.T) {
	ts := startServer(t, echo)
	c := dial(t, ts.path)
	err := c.Call(context.Background(), "notfound", nil, nil)
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("err = %v, want errors.Is ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), `vm "x"`) {
		t.Fatalf("err %q lost the message", err)
	}
}

func TestManyRequestsOnOneConnectionRunConcurrently(t *testing.T) {
	ts := startServer(t, echo)
	c := dial(t, ts.path)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out string
			if err := c.Call(context.Background(), "sleep", map[string]int{"ms": 200}, &out); err != nil || out != "slept" {
				t.Errorf("call %d: %v %q", i, err, out)
			}
		}()
	}
	wg.Wait()
	// Serially this would take 4 s.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("20 sleeps of 200ms on one connection took %s: not concurrent", d)
	}
}

func TestTwoHundredConcurrentClients(t *testing.T) {
	ts := startServer(t, echo)
	var wg sync.WaitGroup
	var failures atomic.Int32
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(context.Background(), ts.path)
			if err != nil {
				failures.Add(1)
				t.Errorf("client %d dial: %v", i, err)
				return
			}
			defer c.Close()
			for j := range 5 {
				var out struct{ Msg string }
				msg := fmt.Sprintf("%d-%d", i, j)
				if err := c.Call(context.Background(), "echo", map[string]string{"msg": msg}, &out); err != nil || out.Msg != msg {
					failures.Add(1)
					t.Errorf("client %d call %d: %v %q", i, j, err, out.Msg)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d failures", n)
	}
}

func TestClientDisconnectCancelsCall(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	ts := startServer(t, func(ctx context.Context, call *Call) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	rc := dialRaw(t, ts.path)
	rc.send(`{"jsonrpc":"2.0","id":1,"method":"block"}` + "\n")
	<-started
	rc.nc.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("handler not cancelled after the client disconnected")
	}
	waitFor(t, func() bool { return ts.srv.ConnCount() == 0 })
}

func TestClientContextCancelCancelsServerCall(t *testing.T) {
	cancelled := make(chan struct{})
	started := make(chan struct{})
	ts := startServer(t, func(ctx context.Context, call *Call) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	c := dial(t, ts.path)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Call(ctx, "block", nil, nil) }()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Call = %v, want context.Canceled", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("server call not cancelled by rpc.cancel")
	}
}

func TestStreamEventsThenResult(t *testing.T) {
	ts := startServer(t, func(ctx context.Context, call *Call) (any, error) {
		for i := range 100 {
			if err := call.Send("progress", i); err != nil {
				return nil, err
			}
		}
		return "done", nil
	})
	c := dial(t, ts.path)
	var got []int
	var result string
	err := c.Stream(context.Background(), "count", nil, func(ev StreamEvent) error {
		var n int
		if err := json.Unmarshal(ev.Data, &n); err != nil {
			return err
		}
		if ev.Kind != "progress" {
			return fmt.Errorf("kind %q", ev.Kind)
		}
		got = append(got, n)
		return nil
	}, &result)
	if err != nil {
		t.Fatal(err)
	}
	if result != "done" || len(got) != 100 {
		t.Fatalf("result %q after %d events, want done after 100", result, len(got))
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("event %d = %d: out of order", i, n)
		}
	}
}

// TestStreamInput is the shape exec will take: the caller streams stdin
// to a running call and reads its output as events.
func TestStreamInput(t *testing.T) {
	ts := startServer(t, func(ctx context.Context, call *Call) (any, error) {
		n := 0
		for {
			select {
			case ev := <-call.Input():
				if ev.Kind == "eof" {
					return n, nil
				}
				var b []byte
				if err := json.Unmarshal(ev.Data, &b); err != nil {
					return nil, err
				}
				n += len(b)
				if err := call.Send("stdout", []byte(strings.ToUpper(string(b)))); err != nil {
					return nil, err
				}
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	})
	c := dial(t, ts.path)
	cc, err := c.Start(context.Background(), "upper", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"hello ", "world"} {
		if err := cc.Send("stdin", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.Send("eof", nil); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var n int
	err = cc.Wait(context.Background(), func(ev StreamEvent) error {
		var b []byte
		json.Unmarshal(ev.Data, &b)
		out.Write(b)
		return nil
	}, &n)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "HELLO WORLD" || n != 11 {
		t.Fatalf("output %q, n %d", out.String(), n)
	}
}

func TestUnauthorisedCallerIsDisconnected(t *testing.T) {
	var asked atomic.Int32
	ts := startServer(t, echo, func(s *Server) {
		s.Authorize = func(p PeerCred) error {
			asked.Add(1)
			if p.PID != int32(os.Getpid()) {
				t.Errorf("peer pid %d, want ours %d", p.PID, os.Getpid())
			}
			return errors.New("not in group")
		}
	})
	c := dial(t, ts.path)
	err := c.Call(context.Background(), "echo", nil, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("unauthorised call = %v, want a closed connection (ErrUnavailable)", err)
	}
	if asked.Load() != 1 {
		t.Fatalf("Authorize asked %d times, want 1", asked.Load())
	}
	if n := ts.srv.ConnCount(); n != 0 {
		t.Fatalf("%d connections open, want 0", n)
	}
}

func TestShutdownLetsInFlightCallsFinish(t *testing.T) {
	started := make(chan struct{}, 1)
	ts := startServer(t, func(ctx context.Context, call *Call) (any, error) {
		started <- struct{}{}
		select {
		case <-time.After(300 * time.Millisecond):
			return "finished", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	c := dial(t, ts.path)
	errc := make(chan error, 1)
	var out string
	go func() { errc <- c.Call(context.Background(), "slow", nil, &out) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; err != nil || out != "finished" {
		t.Fatalf("in-flight call: %v %q, want finished", err, out)
	}
	if _, err := Dial(context.Background(), ts.path); err == nil {
		t.Fatal("dial succeeded after Shutdown")
	}
}

func TestShutdownTimeoutCancelsCalls(t *testing.T) {
	started := make(chan struct{}, 1)
	ts := startServer(t, func(ctx context.Context, call *Call) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, fmt.Errorf("stopped: %w", errdefs.ErrCanceled)
	})
	c := dial(t, ts.path)
	errc := make(chan error, 1)
	go func() { errc <- c.Call(context.Background(), "forever", nil, nil) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if err := <-errc; !errors.Is(err, errdefs.ErrCanceled) {
		t.Fatalf("call = %v, want the handler's cancellation error", err)
	}
}

func TestDialNoDaemon(t *testing.T) {
	_, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none.sock"))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("Dial = %v, want ErrUnavailable saying the daemon is not running", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The client reports the daemon's reason when it hangs up on an oversize
// request, whether the request fitted in the socket's buffer or the
// write itself failed.
func TestClientReportsOversizeRefusal(t *testing.T) {
	ts := startServer(t, echo, func(s *Server) { s.MaxMessageBytes = 4096 })
	for _, size := range []int{10 << 10, 4 << 20} {
		c := dial(t, ts.path)
		err := c.Call(context.Background(), "echo", map[string]string{"msg": strings.Repeat("z", size)}, nil)
		if err == nil || !strings.Contains(err.Error(), "exceeds the 4096-byte limit") {
			t.Errorf("a %d-byte request: %v; want the daemon's limit error", size, err)
		}
	}
}

// TestCloseListenerRetiresOneListener: a listener closed with
// CloseListener ends its Serve with nil; the server's other listener
// serves on, and a connection the closed one accepted goes on too.
func TestCloseListenerRetiresOneListener(t *testing.T) {
	ts := startServer(t, echo)
	old := dial(t, ts.path)
	path2 := filepath.Join(filepath.Dir(ts.path), "s2.sock")
	l2, err := net.Listen("unix", path2)
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- ts.srv.Serve(l2) }()

	// Retire the first listener: its Serve returns nil, not an error.
	var first net.Listener
	waitFor(t, func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		for l := range ts.srv.listeners {
			if l != l2 {
				first = l
			}
		}
		return len(ts.srv.listeners) == 2
	})
	if err := ts.srv.CloseListener(first); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatalf("Serve of the retired listener returned %v, want nil", err)
		}
		ts.done <- ErrServerClosed // what the cleanup expects
	case <-time.After(5 * time.Second):
		t.Fatal("Serve of the retired listener did not return")
	}
	type msg struct {
		Msg string `json:"msg"`
	}
	var out msg
	if err := old.Call(context.Background(), "echo", msg{"before"}, &out); err != nil || out.Msg != "before" {
		t.Errorf("call on a connection the retired listener accepted = %q, %v", out.Msg, err)
	}
	c2 := dial(t, path2)
	if err := c2.Call(context.Background(), "echo", msg{"after"}, &out); err != nil || out.Msg != "after" {
		t.Errorf("call through the other listener = %q, %v", out.Msg, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ts.srv.Shutdown(ctx)
	if err := <-done2; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve of the other listener returned %v after Shutdown", err)
	}
}
