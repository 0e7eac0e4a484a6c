package fcproc

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"banger/internal/errdefs"
)

func TestArgv(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // argv joined by spaces
	}{
		{"plain",
			Config{ID: "vm-1", APISocket: "/run/banger/vm-1/fc.sock"},
			"firecracker --api-sock /run/banger/vm-1/fc.sock --id vm-1"},
		{"own binary",
			Config{ID: "vm-1", Binary: "/opt/fc/firecracker-v1.16.1", APISocket: "/s/fc.sock"},
			"/opt/fc/firecracker-v1.16.1 --api-sock /s/fc.sock --id vm-1"},
		{"network namespace by name",
			Config{ID: "vm-1", APISocket: "/s/fc.sock", NetNS: "banger"},
			"nsenter --net=/run/netns/banger -- firecracker --api-sock /s/fc.sock --id vm-1"},
		{"network namespace by path",
			Config{ID: "vm-1", APISocket: "/s/fc.sock", NetNS: "/var/run/netns/x"},
			"nsenter --net=/var/run/netns/x -- firecracker --api-sock /s/fc.sock --id vm-1"},
		{"jailer with defaults",
			Config{ID: "vm-1", Binary: "/usr/bin/firecracker", APISocket: "/fc.sock", Jailer: &Jailer{UID: 1000, GID: 1001}},
			"jailer --id vm-1 --exec-file /usr/bin/firecracker --uid 1000 --gid 1001 --chroot-base-dir /srv/jailer -- --api-sock /fc.sock"},
		{"jailer in a namespace",
			Config{ID: "vm-1", Binary: "/usr/bin/firecracker", APISocket: "/run/fc.sock", NetNS: "banger",
				Jailer: &Jailer{Binary: "/usr/bin/jailer", UID: 0, GID: 0, ChrootBaseDir: "/var/lib/banger/jail"}},
			"/usr/bin/jailer --id vm-1 --exec-file /usr/bin/firecracker --uid 0 --gid 0 --chroot-base-dir /var/lib/banger/jail --netns /run/netns/banger -- --api-sock /run/fc.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, err := Argv(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(argv, " "); got != tt.want {
				t.Errorf("argv:\n got %s\nwant %s", got, tt.want)
			}
			// Whatever wraps it, a reconciler finds the VM id again.
			if id, ok := IDFromArgv(argv); !ok || id != tt.cfg.ID {
				t.Errorf("IDFromArgv(Argv) = %q, %v; want %q", id, ok, tt.cfg.ID)
			}
		})
	}
}

func TestArgvInvalid(t *testing.T) {
	long := "/" + strings.Repeat("d", 110) + "/fc.sock"
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no id", Config{APISocket: "/s"}, "VM id"},
		{"underscore in the id (Firecracker refuses it)", Config{ID: "vm_1", APISocket: "/s"}, "VM id"},
		{"id too long", Config{ID: strings.Repeat("a", 65), APISocket: "/s"}, "VM id"},
		{"no socket", Config{ID: "vm"}, "API socket is not set"},
		{"relative socket", Config{ID: "vm", APISocket: "fc.sock"}, "not an absolute path"},
		{"socket path too long", Config{ID: "vm", APISocket: long}, "longer than a unix socket path"},
		{"relative console log", Config{ID: "vm", APISocket: "/s", ConsoleLog: "console.log"}, "not an absolute path"},
		{"bad namespace", Config{ID: "vm", APISocket: "/s", NetNS: "a/b"}, "network namespace"},
		{"jailer with a binary from PATH", Config{ID: "vm", APISocket: "/s", Jailer: &Jailer{}}, "--exec-file"},
		{"jailer with an exec file not named firecracker", Config{ID: "vm", Binary: "/usr/bin/fc", APISocket: "/s", Jailer: &Jailer{}}, "file name"},
		{"jailer with a negative uid", Config{ID: "vm", Binary: "/firecracker", APISocket: "/s", Jailer: &Jailer{UID: -1}}, "negative"},
		{"jail socket too long", Config{ID: "vm", Binary: "/firecracker", APISocket: "/s", Jailer: &Jailer{ChrootBaseDir: "/" + strings.Repeat("j", 100)}}, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, err := Argv(tt.cfg)
			if err == nil {
				t.Fatalf("Argv = %q, want an error", argv)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v: want an invalid argument mentioning %q", err, tt.want)
			}
		})
	}
}

func TestHostAPISocket(t *testing.T) {
	plain := Config{ID: "vm-1", APISocket: "/run/fc.sock"}
	if got := plain.HostAPISocket(); got != "/run/fc.sock" {
		t.Errorf("HostAPISocket = %q", got)
	}
	if got := plain.JailRoot(); got != "" {
		t.Errorf("JailRoot without a jailer = %q", got)
	}
	jailed := Config{ID: "vm-1", Binary: "/opt/firecracker-v1.16", APISocket: "/run/fc.sock", Jailer: &Jailer{}}
	if got, want := jailed.JailRoot(), "/srv/jailer/firecracker-v1.16/vm-1/root"; got != want {
		t.Errorf("JailRoot = %q, want %q", got, want)
	}
	if got, want := jailed.HostAPISocket(), "/srv/jailer/firecracker-v1.16/vm-1/root/run/fc.sock"; got != want {
		t.Errorf("HostAPISocket = %q, want %q", got, want)
	}
}

func TestIDFromArgv(t *testing.T) {
	tests := []struct {
		argv   []string
		id     string
		wantOK bool
	}{
		{[]string{"firecracker", "--api-sock", "/s", "--id", "vm-1"}, "vm-1", true},
		// Firecracker's own argv once the jailer has exec'd it.
		{[]string{"/firecracker", "--id", "vm-2", "--start-time-us", "1", "--start-time-cpu-us", "2", "--parent-cpu-time-us", "3", "--api-sock", "/run/fc.sock"}, "vm-2", true},
		{[]string{"/tmp/fcshim", "--api-sock", "/s", "--id", "vm-3"}, "vm-3", true},
		{[]string{"firecracker", "--id", "vm-1"}, "", false},                      // no API socket
		{[]string{"firecracker", "--api-sock", "/s"}, "", false},                  // no id
		{[]string{"firecracker", "--api-sock", "/s", "--id"}, "", false},          // id without value
		{[]string{"firecracker", "--api-sock", "/s", "--id", "a b"}, "", false},   // not an id
		{[]string{"qemu-system-x86_64", "-name", "guest=banger-vm-1"}, "", false}, // another VMM
		{[]string{"sleep", "--id", "vm-1", "--api-sock"}, "", false},              // --api-sock without value
		{nil, "", false},
	}
	for _, tt := range tests {
		id, ok := IDFromArgv(tt.argv)
		if id != tt.id || ok != tt.wantOK {
			t.Errorf("IDFromArgv(%q) = %q, %v; want %q, %v", tt.argv, id, ok, tt.id, tt.wantOK)
		}
	}
	if !reflect.DeepEqual(tests[0].argv, []string{"firecracker", "--api-sock", "/s", "--id", "vm-1"}) {
		t.Error("IDFromArgv changed its argument")
	}
}
