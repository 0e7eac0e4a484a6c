package fakevmm

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseOpts(t *testing.T) {
	o, err := parseOpts("file,id=console,path=/a,,b", "backend")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := o.get("backend"); b != "file" {
		t.Errorf("backend %q", b)
	}
	if p, _ := o.get("path"); p != "/a,b" {
		t.Errorf("path %q; want /a,b", p)
	}
	if _, err := parseOpts("id=a,id=b", ""); err == nil {
		t.Error("a repeated key was accepted")
	}
}

func TestReadKnobs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vm1"), []byte("# faults\nFAKEVMM_HANG_QUIT=1\nFAKEVMM_BOOT_DELAY=2s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"FAKEVMM_BOOT_DELAY=100ms", EnvKnobsDir + "=" + dir}
	k, err := readKnobs(env, "vm1")
	if err != nil || !k.HangQuit || k.BootDelay != 2*time.Second {
		t.Fatalf("vm1: %+v, %v", k, err)
	}
	k, err = readKnobs(env, "vm2")
	if err != nil || k.HangQuit || k.BootDelay != 100*time.Millisecond {
		t.Fatalf("vm2: %+v, %v", k, err)
	}
	if _, err := readKnobs([]string{"FAKEVMM_TYPO=1"}, "vm1"); err == nil {
		t.Fatal("an unknown knob was accepted")
	}
	if _, err := readKnobs([]string{EnvHangQuit + "=yes"}, "vm1"); err == nil {
		t.Fatal("a malformed flag was accepted")
	}
}

// TestQMPProtocol talks raw QMP to the server over a pipe.
func TestQMPProtocol(t *testing.T) {
	v := &vm{exitc: make(chan exitReq, 1), stderr: io.Discard}
	server, client := net.Pipe()
	v.qmpC = server
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.serveQMPConn(server)
	}()
	defer func() {
		client.Close()
		server.Close()
		<-done
	}()
	r := bufio.NewReader(client)
	read := func() map[string]any {
		t.Helper()
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		return m
	}
	ask := func(req string) map[string]any {
		t.Helper()
		if _, err := io.WriteString(client, req+"\n"); err != nil {
			t.Fatal(err)
		}
		return read()
	}
	errClass := func(m map[string]any) string {
		e, _ := m["error"].(map[string]any)
		c, _ := e["class"].(string)
		return c
	}
	if g := read(); g["QMP"] == nil {
		t.Fatalf("greeting %v", g)
	}
	if m := ask(`{"execute":"query-status"}`); errClass(m) != "CommandNotFound" {
		t.Fatalf("before capabilities: %v", m)
	}
	if m := ask(`{"execute":"qmp_capabilities","id":7}`); m["return"] == nil || m["id"] != float64(7) {
		t.Fatalf("qmp_capabilities: %v", m)
	}
	if m := ask(`{"execute":"qmp_capabilities"}`); errClass(m) != "CommandNotFound" {
		t.Fatalf("second qmp_capabilities: %v", m)
	}
	if m := ask(`{"execute":"query-status","id":"a"}`); !strings.Contains(toJSON(m), `"status":"running"`) || m["id"] != "a" {
		t.Fatalf("query-status: %v", m)
	}
	if m := ask(`{"execute":"query-status","arguments":{"x":1}}`); errClass(m) != "GenericError" {
		t.Fatalf("unexpected argument: %v", m)
	}
	if m := ask(`{"execute":"send-key"}`); errClass(m) != "GenericError" {
		t.Fatalf("send-key without keys: %v", m)
	}
	if m := ask(`{"execute":"migrate"}`); errClass(m) != "CommandNotFound" {
		t.Fatalf("unknown command: %v", m)
	}
	if m := ask(`{"nothing":1}`); errClass(m) != "GenericError" {
		t.Fatalf("no execute: %v", m)
	}
	if m := ask(`{"execute":"quit"}`); m["return"] == nil {
		t.Fatalf("quit: %v", m)
	}
	select {
	case r := <-v.exitc:
		if r.code != 0 || r.reason != "host-qmp-quit" {
			t.Fatalf("quit: exit %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("quit asked for no exit")
	}
	go v.emit("SHUTDOWN", map[string]any{"guest": false, "reason": "host-qmp-quit"})
	if m := read(); m["event"] != "SHUTDOWN" {
		t.Fatalf("event %v", m)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
