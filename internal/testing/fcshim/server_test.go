package fcshim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeBooter records what InstanceStart boots.
type fakeBooter struct {
	mu   sync.Mutex
	cfgs []BootConfig // guarded by mu
	vm   *fakeVM      // guarded by mu
	err  error
}

func (b *fakeBooter) Boot(ctx context.Context, cfg BootConfig) (VM, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfgs = append(b.cfgs, cfg)
	if b.err != nil {
		return nil, b.err
	}
	b.vm = &fakeVM{done: make(chan struct{})}
	return b.vm, nil
}

func (b *fakeBooter) booted() []BootConfig {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BootConfig(nil), b.cfgs...)
}

type fakeVM struct {
	mu   sync.Mutex
	cads int // guarded by mu
	once sync.Once
	done chan struct{}
}

func (v *fakeVM) SendCtrlAltDel(context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cads++
	return nil
}
func (v *fakeVM) Kill() error           { v.once.Do(func() { close(v.done) }); return nil }
func (v *fakeVM) Done() <-chan struct{} { return v.done }
func (v *fakeVM) Wait() (int, error)    { <-v.done; return -1, errors.New("killed") }

// fakeTAP stands in for openTAP (which needs CAP_NET_ADMIN): names
// starting "noperm" fail as an unprivileged open would.
func fakeTAP(name string) error {
	if strings.HasPrefix(name, "noperm") {
		return syscall.EPERM
	}
	return nil
}

// files are the host files a configuration names.
type files struct {
	dir, kernel, initrd, root, data, log, metrics string
}

func newFiles(t *testing.T) files {
	t.Helper()
	dir := t.TempDir()
	f := files{dir: dir,
		kernel: filepath.Join(dir, "vmlinux"), initrd: filepath.Join(dir, "initrd"),
		root: filepath.Join(dir, "root.ext4"), data: filepath.Join(dir, "data.ext4"),
		log: filepath.Join(dir, "fc.log"), metrics: filepath.Join(dir, "metrics.json")}
	for _, p := range []string{f.kernel, f.initrd, f.root, f.data} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// call is one API request; body is a template where {{kernel}} and the
// like name the files.
type call struct {
	method, path, body string
}

func (f files) expand(s string) string {
	return strings.NewReplacer("{{dir}}", f.dir, "{{kernel}}", f.kernel, "{{initrd}}", f.initrd,
		"{{root}}", f.root, "{{data}}", f.data, "{{log}}", f.log, "{{metrics}}", f.metrics).Replace(s)
}

func newTestServer(t *testing.T) (*Server, *fakeBooter) {
	t.Helper()
	b := &fakeBooter{}
	s := NewServer(Options{ID: "vm-1", Booter: b, CheckTAP: fakeTAP})
	t.Cleanup(s.Close)
	return s, b
}

// do sends c to s and returns the status and the fault message, if any.
func do(t *testing.T, s *Server, f files, c call) (int, string, []byte) {
	t.Helper()
	var body *strings.Reader
	if c.body != "" {
		body = strings.NewReader(f.expand(c.body))
	} else {
		body = strings.NewReader("")
	}
	req := httptest.NewRequest(c.method, "http://localhost"+c.path, body)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	var flt struct {
		FaultMessage *string `json:"fault_message"`
	}
	raw := rec.Body.Bytes()
	if rec.Code >= 400 {
		if err := json.Unmarshal(raw, &flt); err != nil || flt.FaultMessage == nil || *flt.FaultMessage == "" {
			t.Errorf("%s %s: error reply %q has no fault_message", c.method, c.path, raw)
			return rec.Code, "", raw
		}
		return rec.Code, *flt.FaultMessage, raw
	}
	return rec.Code, "", raw
}

func mustDo(t *testing.T, s *Server, f files, calls ...call) {
	t.Helper()
	for _, c := range calls {
		if code, msg, _ := do(t, s, f, c); code != http.StatusNoContent {
			t.Fatalf("setup %s %s %s: %d %s", c.method, c.path, f.expand(c.body), code, msg)
		}
	}
}

// A complete, valid pre-boot configuration.
var (
	putMachine = call{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256}`}
	putBoot    = call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}", "initrd_path": "{{initrd}}", "boot_args": "console=ttyS0 reboot=k panic=1"}`}
	putRoot    = call{"PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "{{root}}", "is_root_device": true, "is_read_only": true}`}
	putData    = call{"PUT", "/drives/data", `{"drive_id": "data", "path_on_host": "{{data}}", "is_root_device": false, "is_read_only": false}`}
	putNIC     = call{"PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:00:0A:00:00:05"}`}
	start      = call{"PUT", "/actions", `{"action_type": "InstanceStart"}`}
	preBoot    = []call{putMachine, putBoot, putRoot, putData, putNIC}
)

func TestGoodConfigurationBoots(t *testing.T) {
	s, b := newTestServer(t)
	f := newFiles(t)
	code, _, raw := do(t, s, f, call{"GET", "/", ""})
	if code != 200 || !sameJSON(raw, `{"app_name":"Firecracker","id":"vm-1","state":"Not started","vmm_version":"1.16.1"}`) {
		t.Errorf("GET / before boot: %d %s", code, raw)
	}
	if code, _, raw := do(t, s, f, call{"GET", "/machine-config", ""}); code != 200 ||
		!sameJSON(raw, `{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}`) {
		t.Errorf("GET /machine-config before any PUT (Firecracker's defaults): %d %s", code, raw)
	}
	mustDo(t, s, f,
		call{"PUT", "/logger", `{"log_path": "{{log}}", "level": "debug", "show_level": true, "show_log_origin": false}`},
		call{"PUT", "/metrics", `{"metrics_path": "{{metrics}}"}`},
	)
	mustDo(t, s, f, preBoot...)
	mustDo(t, s, f, start)

	want := BootConfig{
		ID: "vm-1", Kernel: f.kernel, Initrd: f.initrd,
		Cmdline:   "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda ro",
		Drives:    []BootDrive{{Path: f.root, ReadOnly: true}, {Path: f.data, ReadOnly: false}},
		NICs:      []BootNIC{{TAP: "tap0", MAC: "02:00:0a:00:00:05"}},
		VCPUs:     2,
		MemoryMiB: 256,
	}
	if got := b.booted(); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Errorf("booted %+v\nwant     %+v", got, want)
	}
	select {
	case <-s.Booted():
	default:
		t.Error("Booted() not closed after InstanceStart")
	}
	if code, _, raw := do(t, s, f, call{"GET", "/", ""}); code != 200 || !strings.Contains(string(raw), `"state":"Running"`) {
		t.Errorf("GET / after boot: %d %s", code, raw)
	}
	mustDo(t, s, f, call{"PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`}, call{"PUT", "/actions", `{"action_type": "FlushMetrics"}`})
	if b.vm.cads != 1 {
		t.Errorf("SendCtrlAltDel reached the VM %d times, want 1", b.vm.cads)
	}
	if m, _ := os.ReadFile(f.metrics); !strings.Contains(string(m), "utc_timestamp_ms") {
		t.Errorf("FlushMetrics wrote %q to the metrics file", m)
	}
	if l, _ := os.ReadFile(f.log); !strings.Contains(string(l), "PUT /actions -> 204") {
		t.Errorf("the shim's log file holds %q, want its request lines", l)
	}
	if code, _, raw := do(t, s, f, call{"GET", "/version", ""}); code != 200 || !sameJSON(raw, `{"firecracker_version":"1.16.1"}`) {
		t.Errorf("GET /version: %d %s", code, raw)
	}
}

func sameJSON(got []byte, want string) bool {
	var g, w any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
		return false
	}
	return reflect.DeepEqual(g, w)
}

// TestAccepted are bodies Firecracker takes that a too-strict shim might
// not.
func TestAccepted(t *testing.T) {
	tests := []struct {
		name string
		c    call
	}{
		{"null for Option fields", call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}", "initrd_path": null, "boot_args": null}`}},
		{"is_read_only left out (defaults to false)", call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": false}`}},
		{"every Drive field", call{"PUT", "/drives/d", `{"drive_id": "d", "partuuid": "0eaa91a0-01", "is_root_device": false, "cache_type": "Writeback",
			"is_read_only": true, "path_on_host": "{{data}}", "io_engine": "Sync",
			"rate_limiter": {"bandwidth": {"size": 1000, "one_time_burst": 0, "refill_time": 100}, "ops": null}}`}},
		{"unknown key in a token bucket (serde ignores it there)", call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": false,
			"rate_limiter": {"ops": {"size": 1, "refill_time": 1, "whatever": true}}}`}},
		{"every MachineConfiguration field", call{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 64, "smt": true, "cpu_template": "None", "track_dirty_pages": true, "huge_pages": "None"}`}},
		{"upper-case MAC, rate limiters", call{"PUT", "/network-interfaces/n_1", `{"iface_id": "n_1", "host_dev_name": "tap9", "guest_mac": "AA:BB:CC:DD:EE:FF", "rx_rate_limiter": {}, "tx_rate_limiter": null}`}},
		{"log level in any case, and Warn", call{"PUT", "/logger", `{"level": "wArN"}`}},
		{"empty logger", call{"PUT", "/logger", `{}`}},
		{"trailing slash on the path", call{"PUT", "/drives/d/", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": false}`}},
		{"whitespace around the body", call{"PUT", "/machine-config", "\n {\"vcpu_count\": 1, \"mem_size_mib\": 128} \n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestServer(t)
			f := newFiles(t)
			if code, msg, _ := do(t, s, f, tt.c); code != http.StatusNoContent {
				t.Errorf("%s %s: %d %s; want 204", tt.c.method, tt.c.path, code, msg)
			}
		})
	}
}

// TestRejected: each request Firecracker refuses, with its status and
// (a distinctive part of) its fault_message.
func TestRejected(t *testing.T) {
	tests := []struct {
		name   string
		setup  []call
		c      call
		status int
		fault  string
	}{
		// Bodies (serde, deny_unknown_fields).
		{"unknown field", nil, call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}", "kernel_args": "x"}`}, 400,
			"An error occurred when deserializing the json body of a request: unknown field `kernel_args`, expected one of `kernel_image_path`, `initrd_path`, `boot_args`."},
		{"unknown field in a nested object", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": false, "rate_limiter": {"bandwith": {"size": 1, "refill_time": 1}}}`}, 400,
			"unknown field `bandwith`"},
		{"missing required field", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}"}`}, 400, "missing field `is_root_device`"},
		{"missing kernel_image_path", nil, call{"PUT", "/boot-source", `{"boot_args": "x"}`}, 400, "missing field `kernel_image_path`"},
		{"missing field in a token bucket", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": false, "rate_limiter": {"ops": {"refill_time": 1}}}`}, 400,
			"missing field `size`"},
		{"missing vcpu_count", nil, call{"PUT", "/machine-config", `{"mem_size_mib": 128}`}, 400, "missing field `vcpu_count`"},
		{"string for a boolean", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": "yes"}`}, 400,
			"invalid type: string \"yes\", expected a boolean"},
		{"number for a string", nil, call{"PUT", "/drives/d", `{"drive_id": 7, "path_on_host": "{{data}}", "is_root_device": false}`}, 400, "invalid type: integer `7`, expected a string"},
		{"string for an integer", nil, call{"PUT", "/machine-config", `{"vcpu_count": "2", "mem_size_mib": 128}`}, 400, "invalid type: string \"2\", expected u8"},
		{"null for a required field", nil, call{"PUT", "/boot-source", `{"kernel_image_path": null}`}, 400, "invalid type: null, expected a string"},
		{"null for a defaulted field", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128, "smt": null}`}, 400, "invalid type: null, expected a boolean"},
		{"duplicate field", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128, "vcpu_count": 2}`}, 400, "duplicate field `vcpu_count`"},
		{"integer too big for u8", nil, call{"PUT", "/machine-config", `{"vcpu_count": 256, "mem_size_mib": 128}`}, 400, "invalid value: integer `256`, expected u8"},
		{"negative integer", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": -1}`}, 400, "invalid value: integer `-1`, expected u64"},
		{"float for an integer", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128.0}`}, 400, "invalid type: floating point `128.0`, expected u64"},
		{"unknown action", nil, call{"PUT", "/actions", `{"action_type": "Reboot"}`}, 400,
			"unknown variant `Reboot`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`"},
		{"action in the wrong case", nil, call{"PUT", "/actions", `{"action_type": "instancestart"}`}, 400, "unknown variant `instancestart`"},
		{"action body with an extra field", nil, call{"PUT", "/actions", `{"action_type": "InstanceStart", "payload": {}}`}, 400, "unknown field `payload`"},
		{"bad log level", nil, call{"PUT", "/logger", `{"level": "Loud"}`}, 400, "Invalid LevelFilter"},
		{"bad cache_type", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": false, "cache_type": "Fast"}`}, 400,
			"unknown variant `Fast`, expected one of `Unsafe`, `Writeback`"},
		{"bad huge_pages", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "1G"}`}, 400, "unknown variant `1G`"},
		{"bad MAC", nil, call{"PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "02:00:0a:00:00:5"}`}, 400,
			"The provided MAC address is invalid."},
		{"not JSON", nil, call{"PUT", "/machine-config", `vcpu_count=1`}, 400, "An error occurred when deserializing the json body of a request"},
		{"an array body", nil, call{"PUT", "/machine-config", `[1, 128]`}, 400, "invalid type: sequence, expected struct MachineConfig"},
		{"trailing data", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128} {}`}, 400, "trailing characters"},

		// Paths and methods.
		{"drive without an id", nil, call{"PUT", "/drives", `{"drive_id": "d", "path_on_host": "{{data}}", "is_root_device": false}`}, 400, "The ID cannot be empty."},
		{"drive id with a dash", nil, call{"PUT", "/drives/root-fs", `{"drive_id": "root-fs", "path_on_host": "{{data}}", "is_root_device": false}`}, 400,
			"API Resource IDs can only contain alphanumeric characters and underscores."},
		{"drive id mismatch", nil, call{"PUT", "/drives/rootfs", `{"drive_id": "other", "path_on_host": "{{root}}", "is_root_device": true}`}, 400,
			"The id from the path does not match the id from the body!"},
		{"interface id mismatch", nil, call{"PUT", "/network-interfaces/eth0", `{"iface_id": "eth1", "host_dev_name": "tap0"}`}, 400,
			"The id from the path [eth0] does not match the id from the body [eth1]!"},
		{"unknown path", nil, call{"PUT", "/kernel", `{}`}, 400, "Invalid request method and/or path: PUT kernel."},
		{"GET on a PUT-only path", nil, call{"GET", "/actions", ""}, 400, "Invalid request method and/or path: GET actions."},
		{"POST", nil, call{"POST", "/actions", `{"action_type": "InstanceStart"}`}, 400, "Invalid HTTP Method: Unsupported HTTP method."},
		{"DELETE", nil, call{"DELETE", "/drives/rootfs", ""}, 400, "Invalid HTTP Method"},
		{"PUT without a body", nil, call{"PUT", "/boot-source", ""}, 400, "Empty PUT request."},
		{"PATCH without a body", nil, call{"PATCH", "/drives/rootfs", ""}, 400, "Empty PATCH request."},
		{"GET with a body", nil, call{"GET", "/", `{}`}, 400, "GET request cannot have a body."},
		{"payload over the limit", nil, call{"PUT", "/boot-source", `{"kernel_image_path": "` + strings.Repeat("k", 52000) + `"}`}, 400,
			"is larger than the limit of 51200 allowed by server."},

		// Resources (the VMM's own checks).
		{"kernel missing", nil, call{"PUT", "/boot-source", `{"kernel_image_path": "{{dir}}/nope"}`}, 400,
			"Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"},
		{"initrd missing", nil, call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}", "initrd_path": "{{dir}}/nope"}`}, 400,
			"Boot source error: The initrd file cannot be opened"},
		{"newline in boot_args", nil, call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}", "boot_args": "a\nb"}`}, 400,
			"Boot source error: The kernel command line is invalid"},
		{"boot_args too long", nil, call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}", "boot_args": "` + strings.Repeat("a", 2048) + `"}`}, 400,
			"The kernel command line is invalid"},
		{"drive image missing", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{dir}}/nope", "is_root_device": false}`}, 400,
			"Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2)"},
		{"drive without path_on_host or socket", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "is_root_device": false, "is_read_only": true}`}, 400,
			"Drive config error: Unable to create the virtio block device: Invalid block config."},
		{"drive with both path and socket", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "path_on_host": "{{data}}", "socket": "/s", "is_root_device": false}`}, 400,
			"Invalid block config."},
		{"second root drive", []call{putRoot}, call{"PUT", "/drives/other", `{"drive_id": "other", "path_on_host": "{{data}}", "is_root_device": true}`}, 400,
			"Drive config error: A root block device already exists!"},
		{"no vCPUs", nil, call{"PUT", "/machine-config", `{"vcpu_count": 0, "mem_size_mib": 128}`}, 400,
			"Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."},
		{"33 vCPUs", nil, call{"PUT", "/machine-config", `{"vcpu_count": 33, "mem_size_mib": 128}`}, 400, "The number of vCPUs"},
		{"odd vCPUs with SMT", nil, call{"PUT", "/machine-config", `{"vcpu_count": 3, "mem_size_mib": 128, "smt": true}`}, 400, "The number of vCPUs"},
		{"no memory", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 0}`}, 400,
			"Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size."},
		{"odd memory with 2M pages", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 129, "huge_pages": "2M"}`}, 400, "The memory size (MiB)"},
		{"MAC in use", []call{putNIC}, call{"PUT", "/network-interfaces/eth1", `{"iface_id": "eth1", "host_dev_name": "tap1", "guest_mac": "02:00:0a:00:00:05"}`}, 400,
			"Network config error: The MAC address is already in use: 02:00:0a:00:00:05"},
		{"TAP in use", []call{putNIC}, call{"PUT", "/network-interfaces/eth1", `{"iface_id": "eth1", "host_dev_name": "tap0"}`}, 400,
			"Device or resource busy (os error 16). Invalid TUN/TAP Backend provided by tap0."},
		{"TAP name too long", nil, call{"PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "a-very-long-tap-name"}`}, 400,
			"Open tap device failed: Invalid interface name"},
		{"TAP cannot be opened", nil, call{"PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "noperm0"}`}, 400,
			"Error while creating ifreq structure: Operation not permitted (os error 1)"},
		{"metrics twice", []call{{"PUT", "/metrics", `{"metrics_path": "{{metrics}}"}`}}, call{"PUT", "/metrics", `{"metrics_path": "{{metrics}}"}`}, 400,
			"Metrics error: Reinitialization of metrics not allowed."},

		// State: pre-boot only after InstanceStart, post-boot only before.
		{"InstanceStart without a boot source", nil, start, 400, "Start microvm error: Cannot start microvm without kernel configuration."},
		{"SendCtrlAltDel before boot", preBoot, call{"PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`}, 400, errPreBoot},
		{"FlushMetrics before boot", nil, call{"PUT", "/actions", `{"action_type": "FlushMetrics"}`}, 400, errPreBoot},
		{"boot source after boot", append(preBoot, start), putBoot, 400, errPostBoot},
		{"machine config after boot", append(preBoot, start), putMachine, 400, errPostBoot},
		{"logger after boot", append(preBoot, start), call{"PUT", "/logger", `{"level": "Info"}`}, 400, errPostBoot},
		{"metrics after boot", append(preBoot, start), call{"PUT", "/metrics", `{"metrics_path": "{{metrics}}"}`}, 400, errPostBoot},
		{"InstanceStart twice", append(preBoot, start), start, 400, errPostBoot},
		{"drive after boot (hotplug needs PCI)", append(preBoot, start), putData, 400, errNoPCI},
		{"NIC after boot (hotplug needs PCI)", append(preBoot, start), call{"PUT", "/network-interfaces/eth1", `{"iface_id": "eth1", "host_dev_name": "tap1"}`}, 400, errNoPCI},
		{"bad body after boot: the body is refused first", append(preBoot, start), call{"PUT", "/boot-source", `{"kernel": "x"}`}, 400, "unknown field `kernel`"},

		// What the shim does not emulate.
		{"vhost-user drive", nil, call{"PUT", "/drives/d", `{"drive_id": "d", "socket": "/run/vhost.sock", "is_root_device": false}`}, 400, "does not emulate vhost-user"},
		{"MTU", nil, call{"PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 1400}`}, 400, "does not emulate NetworkInterface.mtu"},
		{"huge pages", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128, "huge_pages": "2M"}`}, 400, "does not emulate MachineConfiguration.huge_pages"},
		{"CPU template", nil, call{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "T2"}`}, 400, "does not emulate CPU templates"},
		{"vsock", nil, call{"PUT", "/vsock", `{"guest_cid": 3, "uds_path": "/v.sock"}`}, 400, "does not emulate PUT /vsock"},
		{"PATCH", nil, call{"PATCH", "/machine-config", `{"vcpu_count": 2}`}, 400, "does not emulate PATCH /machine-config"},
		{"snapshot", nil, call{"GET", "/vm/config", ""}, 400, "does not emulate GET /vm"},
		{"no drives", []call{putBoot}, start, 400, "does not emulate a VM without drives"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, b := newTestServer(t)
			f := newFiles(t)
			mustDo(t, s, f, tt.setup...)
			before := len(b.booted())
			code, msg, raw := do(t, s, f, tt.c)
			if code != tt.status || !strings.Contains(msg, tt.fault) {
				t.Errorf("%s %s: %d %q\nwant %d with %q (body %s)", tt.c.method, tt.c.path, code, msg, tt.status, tt.fault, raw)
			}
			if len(b.booted()) != before {
				t.Error("a refused request booted a VM")
			}
		})
	}
}

// TestRefusedRequestChangesNothing: a refused PUT leaves the configuration
// as it was, so InstanceStart boots what was accepted.
func TestRefusedRequestChangesNothing(t *testing.T) {
	s, b := newTestServer(t)
	f := newFiles(t)
	mustDo(t, s, f, preBoot...)
	for _, c := range []call{
		{"PUT", "/machine-config", `{"vcpu_count": 0, "mem_size_mib": 64}`},
		{"PUT", "/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "{{dir}}/nope", "is_root_device": true}`},
		{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}", "boot_args": "x", "extra": 1}`},
	} {
		if code, _, _ := do(t, s, f, c); code != 400 {
			t.Fatalf("%s %s accepted", c.method, c.path)
		}
	}
	mustDo(t, s, f, start)
	got := b.booted()[0]
	if got.VCPUs != 2 || got.MemoryMiB != 256 || got.Drives[0].Path != f.root || !strings.HasPrefix(got.Cmdline, "console=ttyS0") {
		t.Errorf("booted %+v after refused requests; want the accepted configuration", got)
	}
}

func TestDriveAndNICOrder(t *testing.T) {
	s, b := newTestServer(t)
	f := newFiles(t)
	ext := filepath.Join(f.dir, "extra")
	os.WriteFile(ext, nil, 0o644)
	mustDo(t, s, f,
		putBoot,
		putData, // added before the root drive...
		putRoot, // ...which Firecracker puts first anyway
		call{"PUT", "/drives/extra", `{"drive_id": "extra", "path_on_host": "` + ext + `", "is_root_device": false, "is_read_only": true}`},
		// Replacing a drive keeps its place.
		call{"PUT", "/drives/data", `{"drive_id": "data", "path_on_host": "{{data}}", "is_root_device": false, "is_read_only": true}`},
		call{"PUT", "/network-interfaces/a", `{"iface_id": "a", "host_dev_name": "tapa", "guest_mac": "02:00:00:00:00:0a"}`},
		call{"PUT", "/network-interfaces/b", `{"iface_id": "b", "host_dev_name": "tapb", "guest_mac": "02:00:00:00:00:0b"}`},
		call{"PUT", "/network-interfaces/c", `{"iface_id": "c", "host_dev_name": "tapc"}`},
		// Replacing a NIC removes it (the last one takes its place) and
		// appends it: Firecracker's swap_remove.
		call{"PUT", "/network-interfaces/a", `{"iface_id": "a", "host_dev_name": "tapa", "guest_mac": "02:00:00:00:00:0a"}`},
		start,
	)
	got := b.booted()[0]
	wantDrives := []BootDrive{{Path: f.root, ReadOnly: true}, {Path: f.data, ReadOnly: true}, {Path: ext, ReadOnly: true}}
	if !reflect.DeepEqual(got.Drives, wantDrives) {
		t.Errorf("drives %v, want %v", got.Drives, wantDrives)
	}
	var taps []string
	for _, n := range got.NICs {
		taps = append(taps, n.TAP)
	}
	if strings.Join(taps, ",") != "tapc,tapb,tapa" {
		t.Errorf("NIC order %v, want tapc,tapb,tapa", taps)
	}
	// tapc had no guest_mac: a random locally administered unicast one.
	mac := got.NICs[0].MAC
	hw, err := net.ParseMAC(mac)
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`).MatchString(mac) || hw[0]&3 != 2 {
		t.Errorf("NIC without guest_mac got MAC %q", mac)
	}
}

func TestCmdline(t *testing.T) {
	yes, no := true, false
	uuid := "0eaa91a0-01"
	tests := []struct {
		args string
		root *drive
		want string
	}{
		{"console=ttyS0", &drive{IsRootDevice: true, IsReadOnly: &yes}, "console=ttyS0 pci=off root=/dev/vda ro"},
		{"console=ttyS0", &drive{IsRootDevice: true, IsReadOnly: &no}, "console=ttyS0 pci=off root=/dev/vda rw"},
		{"console=ttyS0", &drive{IsRootDevice: true}, "console=ttyS0 pci=off root=/dev/vda rw"},
		{"console=ttyS0", &drive{IsRootDevice: true, PartUUID: &uuid, IsReadOnly: &yes}, "console=ttyS0 pci=off root=PARTUUID=0eaa91a0-01 ro"},
		{"console=ttyS0", nil, "console=ttyS0 pci=off"},
		{"console=ttyS0 quiet -- init-arg1 --flag", &drive{IsRootDevice: true}, "console=ttyS0 quiet pci=off root=/dev/vda rw -- init-arg1 --flag"},
		{`a="x -- y" b`, nil, `a="x -- y" b pci=off`},
		{defaultKernelCmdline, nil, defaultKernelCmdline + " pci=off"},
	}
	for _, tt := range tests {
		if got := firecrackerCmdline(tt.args, tt.root); got != tt.want {
			t.Errorf("firecrackerCmdline(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}

	// Without boot_args, Firecracker's default command line.
	s, b := newTestServer(t)
	f := newFiles(t)
	mustDo(t, s, f, call{"PUT", "/boot-source", `{"kernel_image_path": "{{kernel}}"}`}, putRoot, start)
	if got, want := b.booted()[0].Cmdline, defaultKernelCmdline+" pci=off root=/dev/vda ro"; got != want {
		t.Errorf("default command line %q, want %q", got, want)
	}
}

func TestBootFailure(t *testing.T) {
	s, b := newTestServer(t)
	b.err = fmt.Errorf("qemu exploded")
	f := newFiles(t)
	mustDo(t, s, f, preBoot...)
	code, msg, _ := do(t, s, f, start)
	if code != 400 || !strings.Contains(msg, "Start microvm error") || !strings.Contains(msg, "qemu exploded") {
		t.Errorf("InstanceStart with a failing boot: %d %q", code, msg)
	}
	if code, _, raw := do(t, s, f, call{"GET", "/", ""}); code != 200 || !strings.Contains(string(raw), stateNotStarted) {
		t.Errorf("after a failed boot GET / = %d %s, want Not started", code, raw)
	}
}

func TestStop(t *testing.T) {
	s, b := newTestServer(t)
	f := newFiles(t)
	mustDo(t, s, f, preBoot...)
	mustDo(t, s, f, start)
	s.Stop()
	select {
	case <-b.vm.Done():
	default:
		t.Error("Stop did not kill the VM")
	}
	if code, _, _ := do(t, s, f, call{"GET", "/", ""}); code != 400 {
		t.Errorf("a request after Stop: %d, want 400", code)
	}
}

// TestLoggerFIFONobodyReads: Firecracker's log may be a named pipe; when
// nobody reads it, log lines are dropped rather than blocking the API.
func TestLoggerFIFONobodyReads(t *testing.T) {
	s, _ := newTestServer(t)
	f := newFiles(t)
	fifo := filepath.Join(f.dir, "log.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	mustDo(t, s, f, call{"PUT", "/logger", `{"log_path": "` + fifo + `"}`})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3000 { // ~200 KB of log lines, more than a pipe holds
			do(t, s, f, call{"GET", "/", ""})
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("requests blocked on a log FIFO nobody reads")
	}
}
