package fcproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/errdefs"
)

// fakeAPI is a Firecracker API server on a unix socket in the test's temp
// dir: it records every request and answers with reply (204 when nil).
type fakeAPI struct {
	sock  string
	reply func(method, path string, body []byte) (status int, resp string)

	mu   sync.Mutex
	reqs []recorded // guarded by mu
}

type recorded struct {
	Method, Path, ContentType string
	Body                      []byte
}

func newFakeAPI(t *testing.T, reply func(method, path string, body []byte) (int, string)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{sock: filepath.Join(t.TempDir(), "api.sock"), reply: reply}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recorded{r.Method, r.URL.EscapedPath(), r.Header.Get("Content-Type"), body})
	f.mu.Unlock()
	status, resp := http.StatusNoContent, ""
	if f.reply != nil {
		status, resp = f.reply(r.Method, r.URL.EscapedPath(), body)
	}
	w.WriteHeader(status)
	io.WriteString(w, resp)
}

func (f *fakeAPI) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// sameJSON reports whether got holds the JSON value want (a literal).
func sameJSON(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("body %q is not JSON: %v", got, err)
		return false
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %q: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

func TestClientRequestBodies(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		call       func(*Client) error
		method     string
		path, body string // body "" means no body
	}{
		{"boot source, all fields",
			func(c *Client) error {
				return c.PutBootSource(ctx, BootSource{KernelImagePath: "/k/vmlinux", InitrdPath: "/k/initrd", BootArgs: "console=ttyS0 reboot=k"})
			},
			"PUT", "/boot-source", `{"kernel_image_path":"/k/vmlinux","initrd_path":"/k/initrd","boot_args":"console=ttyS0 reboot=k"}`},
		{"boot source, only the required field",
			func(c *Client) error { return c.PutBootSource(ctx, BootSource{KernelImagePath: "/k/vmlinux"}) },
			"PUT", "/boot-source", `{"kernel_image_path":"/k/vmlinux"}`},
		{"root drive",
			func(c *Client) error {
				return c.PutDrive(ctx, Drive{DriveID: "rootfs", PathOnHost: "/vm/root.ext4", IsRootDevice: true, IsReadOnly: false})
			},
			"PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/vm/root.ext4","is_root_device":true,"is_read_only":false}`},
		{"read-only data drive",
			func(c *Client) error {
				return c.PutDrive(ctx, Drive{DriveID: "data_1", PathOnHost: "/vm/data", IsReadOnly: true})
			},
			"PUT", "/drives/data_1", `{"drive_id":"data_1","path_on_host":"/vm/data","is_root_device":false,"is_read_only":true}`},
		{"network interface",
			func(c *Client) error {
				return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "bgtap3", GuestMAC: "02:00:0a:00:00:05"})
			},
			"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"bgtap3","guest_mac":"02:00:0a:00:00:05"}`},
		{"network interface without a MAC",
			func(c *Client) error {
				return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "bgtap3"})
			},
			"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"bgtap3"}`},
		{"machine config",
			func(c *Client) error {
				return c.PutMachineConfig(ctx, MachineConfiguration{VCPUCount: 2, MemSizeMiB: 512})
			},
			"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512}`},
		{"machine config with SMT",
			func(c *Client) error {
				return c.PutMachineConfig(ctx, MachineConfiguration{VCPUCount: 4, MemSizeMiB: 1024, SMT: true})
			},
			"PUT", "/machine-config", `{"vcpu_count":4,"mem_size_mib":1024,"smt":true}`},
		{"logger",
			func(c *Client) error {
				return c.PutLogger(ctx, Logger{LogPath: "/vm/fc.log", Level: LogLevelDebug, ShowLevel: true})
			},
			"PUT", "/logger", `{"log_path":"/vm/fc.log","level":"Debug","show_level":true,"show_log_origin":false}`},
		{"InstanceStart",
			func(c *Client) error { return c.Action(ctx, ActionInstanceStart) },
			"PUT", "/actions", `{"action_type":"InstanceStart"}`},
		{"SendCtrlAltDel",
			func(c *Client) error { return c.Action(ctx, ActionSendCtrlAltDel) },
			"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`},
		{"FlushMetrics",
			func(c *Client) error { return c.Action(ctx, ActionFlushMetrics) },
			"PUT", "/actions", `{"action_type":"FlushMetrics"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, nil)
			c := NewClient(api.sock)
			defer c.Close()
			if err := tt.call(c); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := api.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != tt.method || r.Path != tt.path {
				t.Errorf("request %s %s, want %s %s", r.Method, r.Path, tt.method, tt.path)
			}
			if r.ContentType != "application/json" {
				t.Errorf("Content-Type %q, want application/json", r.ContentType)
			}
			if !sameJSON(t, r.Body, tt.body) {
				t.Errorf("body %s\nwant %s", r.Body, tt.body)
			}
		})
	}
}

func TestClientInstanceInfo(t *testing.T) {
	api := newFakeAPI(t, func(method, path string, body []byte) (int, string) {
		return http.StatusOK, `{"app_name":"Firecracker","id":"vm-1","state":"Not started","vmm_version":"1.16.1"}`
	})
	c := NewClient(api.sock)
	defer c.Close()
	info, err := c.InstanceInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := InstanceInfo{AppName: "Firecracker", ID: "vm-1", State: StateNotStarted, VMMVersion: "1.16.1"}
	if info != want {
		t.Errorf("InstanceInfo = %+v, want %+v", info, want)
	}
	r := api.requests()[0]
	if r.Method != "GET" || r.Path != "/" || len(r.Body) != 0 {
		t.Errorf("request %s %s with body %q, want GET / without a body", r.Method, r.Path, r.Body)
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		wantMsg  string
		sentinel error
	}{
		{"fault message", 400, `{"fault_message":"Drive config error: A root block device already exists!"}`,
			"Drive config error: A root block device already exists!", errdefs.ErrInvalidArgument},
		{"pre-boot only after boot", 400, `{"fault_message":"The requested operation is not supported after starting the microVM."}`,
			"The requested operation is not supported after starting the microVM.", errdefs.ErrFailedPrecondition},
		{"post-boot only before boot", 400, `{"fault_message":"The requested operation is not supported before starting the microVM."}`,
			"The requested operation is not supported before starting the microVM.", errdefs.ErrFailedPrecondition},
		{"HTTP layer's error body", 400, `{ "error": "Invalid HTTP Method: Unsupported HTTP method.\nAll previous unanswered requests will be dropped." }`,
			"Invalid HTTP Method: Unsupported HTTP method.", errdefs.ErrInvalidArgument},
		{"server error without JSON", 500, "boom", "boom", errdefs.ErrUnavailable},
		{"empty error body", 400, "", "(no message)", errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, func(string, string, []byte) (int, string) { return tt.status, tt.body })
			c := NewClient(api.sock)
			defer c.Close()
			err := c.PutDrive(context.Background(), Drive{DriveID: "root", PathOnHost: "/x", IsRootDevice: true})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T) is not an *APIError", err, err)
			}
			if ae.StatusCode != tt.status || ae.Method != "PUT" || ae.Path != "/drives/root" || !strings.HasPrefix(ae.FaultMessage, tt.wantMsg) {
				t.Errorf("APIError %+v, want status %d, PUT /drives/root, message %q", ae, tt.status, tt.wantMsg)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.sentinel)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tt.status)) {
				t.Errorf("error %q does not carry the status code", err)
			}
		})
	}
}

func TestClientTransportErrors(t *testing.T) {
	t.Run("no server", func(t *testing.T) {
		c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
		err := c.Action(context.Background(), ActionInstanceStart)
		if err == nil || IsAPIError(err) || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("error %v: want a transport error wrapping ErrUnavailable", err)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		release := make(chan struct{})
		api := newFakeAPI(t, func(string, string, []byte) (int, string) {
			<-release
			return http.StatusNoContent, ""
		})
		defer close(release)
		c := NewClient(api.sock)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := c.Action(ctx, ActionInstanceStart)
		if !errors.Is(err, context.DeadlineExceeded) || IsAPIError(err) {
			t.Errorf("error %v: want the context's deadline", err)
		}
	})
	t.Run("bad 200 body", func(t *testing.T) {
		api := newFakeAPI(t, func(string, string, []byte) (int, string) { return 200, "not json" })
		c := NewClient(api.sock)
		defer c.Close()
		if _, err := c.InstanceInfo(context.Background()); err == nil || !strings.Contains(err.Error(), "not json") {
			t.Errorf("error %v: want a decoding error quoting the reply", err)
		}
	})
}
