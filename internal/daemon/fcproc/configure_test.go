package fcproc

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"banger/internal/errdefs"
)

// apiProcess is a Process whose API is api, for Configure without a real
// process.
func apiProcess(api *fakeAPI) *Process {
	return &Process{id: "vm-1", client: NewClient(api.sock), done: make(chan struct{})}
}

func goodMachine() MachineConfig {
	return MachineConfig{
		Logger:     &Logger{LogPath: "/vm/fc.log", Level: LogLevelInfo},
		Machine:    MachineConfiguration{VCPUCount: 2, MemSizeMiB: 256},
		BootSource: BootSource{KernelImagePath: "/k/vmlinux", InitrdPath: "/k/initrd", BootArgs: "console=ttyS0 reboot=k panic=1"},
		Drives: []Drive{
			{DriveID: "rootfs", PathOnHost: "/vm/root.ext4", IsRootDevice: true, IsReadOnly: true},
			{DriveID: "data", PathOnHost: "/vm/data.ext4"},
		},
		NetworkInterfaces: []NetworkInterface{{IfaceID: "eth0", HostDevName: "bgtap0", GuestMAC: "02:00:0a:00:00:05"}},
	}
}

func paths(reqs []recorded) string {
	var s []string
	for _, r := range reqs {
		s = append(s, r.Method+" "+r.Path)
	}
	return strings.Join(s, ", ")
}

func TestConfigureOrder(t *testing.T) {
	api := newFakeAPI(t, nil)
	p := apiProcess(api)
	if err := p.Configure(context.Background(), goodMachine()); err != nil {
		t.Fatal(err)
	}
	want := "PUT /logger, PUT /machine-config, PUT /boot-source, PUT /drives/rootfs, PUT /drives/data, PUT /network-interfaces/eth0, PUT /actions"
	reqs := api.requests()
	if got := paths(reqs); got != want {
		t.Errorf("requests:\n got %s\nwant %s", got, want)
	}
	if last := reqs[len(reqs)-1]; !sameJSON(t, last.Body, `{"action_type":"InstanceStart"}`) {
		t.Errorf("last body %s, want InstanceStart", last.Body)
	}

	api2 := newFakeAPI(t, nil)
	mc := goodMachine()
	mc.Logger, mc.NetworkInterfaces = nil, nil
	if err := apiProcess(api2).Configure(context.Background(), mc); err != nil {
		t.Fatal(err)
	}
	if got, want := paths(api2.requests()), "PUT /machine-config, PUT /boot-source, PUT /drives/rootfs, PUT /drives/data, PUT /actions"; got != want {
		t.Errorf("without logger and NICs:\n got %s\nwant %s", got, want)
	}
}

func TestConfigureStopsAtFirstRefusal(t *testing.T) {
	api := newFakeAPI(t, func(method, path string, body []byte) (int, string) {
		if path == "/drives/data" {
			return http.StatusBadRequest, `{"fault_message":"Drive config error: Unable to create the virtio block device: No such file or directory (os error 2)"}`
		}
		return http.StatusNoContent, ""
	})
	err := apiProcess(api).Configure(context.Background(), goodMachine())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Path != "/drives/data" || !strings.Contains(err.Error(), "vm-1") {
		t.Fatalf("error %v: want the APIError of PUT /drives/data, naming the VM", err)
	}
	if got, want := paths(api.requests()), "PUT /logger, PUT /machine-config, PUT /boot-source, PUT /drives/rootfs, PUT /drives/data"; got != want {
		t.Errorf("requests:\n got %s\nwant %s", got, want)
	}
}

func TestConfigureValidates(t *testing.T) {
	tests := []struct {
		name   string
		change func(*MachineConfig)
		want   string
	}{
		{"no vCPUs", func(m *MachineConfig) { m.Machine.VCPUCount = 0 }, "0 vCPUs"},
		{"too many vCPUs", func(m *MachineConfig) { m.Machine.VCPUCount = 33 }, "33 vCPUs"},
		{"odd vCPUs with SMT", func(m *MachineConfig) { m.Machine.VCPUCount, m.Machine.SMT = 3, true }, "with SMT"},
		{"no memory", func(m *MachineConfig) { m.Machine.MemSizeMiB = 0 }, "MiB of memory"},
		{"no kernel", func(m *MachineConfig) { m.BootSource.KernelImagePath = "" }, "kernel is not set"},
		{"relative initrd", func(m *MachineConfig) { m.BootSource.InitrdPath = "initrd" }, "not an absolute path"},
		{"newline in the command line", func(m *MachineConfig) { m.BootSource.BootArgs = "a\nb" }, "printable ASCII"},
		{"command line too long", func(m *MachineConfig) { m.BootSource.BootArgs = strings.Repeat("x", 2048) }, "2048 bytes"},
		{"drive id with a dash", func(m *MachineConfig) { m.Drives[1].DriveID = "data-1" }, `"data-1"`},
		{"drive id twice", func(m *MachineConfig) { m.Drives[1].DriveID = "rootfs" }, "used twice"},
		{"two root drives", func(m *MachineConfig) { m.Drives[1].IsRootDevice = true }, "2 root drives"},
		{"relative drive image", func(m *MachineConfig) { m.Drives[0].PathOnHost = "root.ext4" }, "not an absolute path"},
		{"TAP name too long", func(m *MachineConfig) { m.NetworkInterfaces[0].HostDevName = "a-very-long-tap-name" }, "TAP name"},
		{"short MAC", func(m *MachineConfig) { m.NetworkInterfaces[0].GuestMAC = "2:0:a:0:0:5" }, "MAC"},
		{"MAC with dashes", func(m *MachineConfig) { m.NetworkInterfaces[0].GuestMAC = "02-00-0a-00-00-05" }, "MAC"},
		{"multicast MAC", func(m *MachineConfig) { m.NetworkInterfaces[0].GuestMAC = "01:00:0a:00:00:05" }, "MAC"},
		{"bad log level", func(m *MachineConfig) { m.Logger.Level = "Loud" }, "log level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, nil)
			mc := goodMachine()
			tt.change(&mc)
			err := apiProcess(api).Configure(context.Background(), mc)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v: want an invalid argument mentioning %q", err, tt.want)
			}
			if n := len(api.requests()); n != 0 {
				t.Errorf("%d requests sent for an invalid configuration", n)
			}
		})
	}
}
