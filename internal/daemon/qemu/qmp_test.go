package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const fakeGreeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`

// qmpPeer is the server side of one fake QMP connection.
type qmpPeer struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
}

type qmpReq struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

func (p *qmpPeer) send(s string) {
	if _, err := p.conn.Write([]byte(s + "\r\n")); err != nil {
		p.t.Errorf("fake QMP server: write: %v", err)
	}
}

func (p *qmpPeer) recv() qmpReq {
	var r qmpReq
	if err := p.dec.Decode(&r); err != nil {
		p.t.Errorf("fake QMP server: read: %v", err)
	}
	return r
}

func (p *qmpPeer) reply(r qmpReq, ret string) {
	p.send(`{"return": ` + ret + `, "id": ` + string(r.ID) + `}`)
}

// handshake sends the greeting and answers qmp_capabilities.
func (p *qmpPeer) handshake() {
	p.send(fakeGreeting)
	r := p.recv()
	if r.Execute != "qmp_capabilities" || r.ID == nil {
		p.t.Errorf("first command %+v, want qmp_capabilities with an id", r)
	}
	p.reply(r, "{}")
}

// fakeQMP listens on a unix socket and runs script on the first
// connection; the returned path is the socket. The test waits for script.
func fakeQMP(t *testing.T, script func(p *qmpPeer)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		script(&qmpPeer{t: t, conn: conn, dec: json.NewDecoder(conn)})
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return path
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestQMPCommandSkipsEvents(t *testing.T) {
	path := fakeQMP(t, func(p *qmpPeer) {
		p.handshake()
		r := p.recv()
		if r.Execute != "send-key" {
			t.Errorf("command %q, want send-key", r.Execute)
		}
		var args struct{ Keys []struct{ Type, Data string } }
		if err := json.Unmarshal(r.Arguments, &args); err != nil || len(args.Keys) != 3 || args.Keys[2].Data != "delete" {
			t.Errorf("send-key arguments %s", r.Arguments)
		}
		p.send(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": true}}`)
		p.send(`{"return": {"bogus": true}, "id": "not-ours"}`)
		p.reply(r, "{}")
		r = p.recv()
		if r.Execute != "query-status" || r.Arguments != nil {
			t.Errorf("command %+v, want query-status without arguments", r)
		}
		p.send(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 3}}`)
		p.reply(r, `{"status": "running", "running": true}`)
	})
	ctx := testCtx(t)
	c, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version() != "7.2.22" {
		t.Errorf("Version = %q, want 7.2.22", c.Version())
	}
	if ret, err := c.Execute(ctx, "send-key", ctrlAltDel); err != nil || string(ret) != "{}" {
		t.Errorf("send-key = %s, %v", ret, err)
	}
	ret, err := c.Execute(ctx, "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "running" {
		t.Errorf("query-status = %s (%v)", ret, err)
	}
}

func TestQMPErrorReply(t *testing.T) {
	path := fakeQMP(t, func(p *qmpPeer) {
		p.handshake()
		r := p.recv()
		p.send(`{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": ` + string(r.ID) + `}`)
	})
	ctx := testCtx(t)
	c, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Execute(ctx, "nope", nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "nope" || !strings.Contains(qe.Desc, "not been found") {
		t.Errorf("error %v (%#v), want a CommandNotFound *QMPError for nope", err, qe)
	}
}

func TestQMPConcurrentRepliesOutOfOrder(t *testing.T) {
	path := fakeQMP(t, func(p *qmpPeer) {
		p.handshake()
		a, b := p.recv(), p.recv()
		p.reply(b, `"`+b.Execute+`"`)
		p.send(`{"event": "X"}`)
		p.reply(a, `"`+a.Execute+`"`)
	})
	ctx := testCtx(t)
	c, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for _, cmd := range []string{"first", "second"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ret, err := c.Execute(ctx, cmd, map[string]int{"n": 1})
			if err != nil || string(ret) != `"`+cmd+`"` {
				t.Errorf("%s = %s, %v; want its own reply", cmd, ret, err)
			}
		}()
	}
	wg.Wait()
}

func TestQMPServerClosesMidCommand(t *testing.T) {
	path := fakeQMP(t, func(p *qmpPeer) {
		p.handshake()
		p.recv()
		p.send(`{"return": {}, "id"`) // half a message, then gone
	})
	ctx := testCtx(t)
	c, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Execute(ctx, "quit", nil); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("Execute across the close: %v, want ErrQMPClosed", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the server went away")
	}
	start := time.Now()
	if _, err := c.Execute(ctx, "query-status", nil); !errors.Is(err, ErrQMPClosed) || time.Since(start) > time.Second {
		t.Errorf("Execute after the close: %v after %v, want ErrQMPClosed at once", err, time.Since(start))
	}
}

func TestQMPContextEndsWhileWaiting(t *testing.T) {
	path := fakeQMP(t, func(p *qmpPeer) {
		p.handshake()
		slow := p.recv()
		next := p.recv()
		p.reply(slow, `"late"`) // nobody waits for it any more
		p.reply(next, `"next"`)
	})
	ctx := testCtx(t)
	c, err := DialQMP(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.Execute(short, "slow", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Execute past its deadline: %v, want DeadlineExceeded", err)
	}
	if ret, err := c.Execute(ctx, "next", nil); err != nil || string(ret) != `"next"` {
		t.Errorf("the next command = %s, %v; want its own reply, not the late one", ret, err)
	}
}

func TestQMPHandshakeFailures(t *testing.T) {
	tests := []struct {
		name   string
		script func(p *qmpPeer)
		want   string
	}{
		{"no greeting", func(p *qmpPeer) { time.Sleep(500 * time.Millisecond) }, "greeting"},
		{"not a greeting", func(p *qmpPeer) { p.send(`{"return": {}}`) }, "not a QMP greeting"},
		{"capabilities refused", func(p *qmpPeer) {
			p.send(fakeGreeting)
			r := p.recv()
			p.send(`{"error": {"class": "GenericError", "desc": "no"}, "id": ` + string(r.ID) + `}`)
		}, "GenericError"},
		{"closed after greeting", func(p *qmpPeer) { p.send(fakeGreeting) }, "closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fakeQMP(t, tt.script)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			c, err := DialQMP(ctx, path)
			if err == nil {
				c.Close()
				t.Fatal("DialQMP succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DialQMP: %v, want it to say %q", err, tt.want)
			}
		})
	}
}
