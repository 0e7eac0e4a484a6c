package fcproc

// The bodies of the Firecracker API calls banger makes. Each type names
// the definition of Firecracker's swagger (v1.16.1) it mirrors; the json
// tags are the swagger's property names. A field the swagger marks
// required has no omitempty; an optional one has it, so an unset field is
// absent and Firecracker applies its own default.

// BootSource is the body of PUT /boot-source (definition BootSource;
// required: kernel_image_path). Pre-boot only.
type BootSource struct {
	// KernelImagePath is the host path of an uncompressed vmlinux.
	KernelImagePath string `json:"kernel_image_path"`
	// InitrdPath is the host path of an initrd; optional.
	InitrdPath string `json:"initrd_path,omitempty"`
	// BootArgs is the kernel command line. When empty the field is not
	// sent and Firecracker uses its default command line. Firecracker
	// appends root=/dev/vda ro|rw for the root drive itself.
	BootArgs string `json:"boot_args,omitempty"`
}

// Drive is the body of PUT /drives/{drive_id} (definition Drive;
// required: drive_id, is_root_device; for a virtio-block drive, as banger
// uses, path_on_host and is_read_only are required too). Pre-boot only.
type Drive struct {
	// DriveID names the drive; Firecracker takes letters, digits and '_'.
	// It is also the last element of the request path.
	DriveID string `json:"drive_id"`
	// PathOnHost is the raw disk image.
	PathOnHost string `json:"path_on_host"`
	// IsRootDevice makes this drive /dev/vda and adds root=/dev/vda to
	// the kernel command line.
	IsRootDevice bool `json:"is_root_device"`
	// IsReadOnly opens the image read-only and tells the guest so.
	IsReadOnly bool `json:"is_read_only"`
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}
// (definition NetworkInterface; required: iface_id, host_dev_name).
// Pre-boot only.
type NetworkInterface struct {
	// IfaceID names the interface; letters, digits and '_'. It is also the
	// last element of the request path.
	IfaceID string `json:"iface_id"`
	// HostDevName is the TAP device on the host (in Firecracker's network
	// namespace).
	HostDevName string `json:"host_dev_name"`
	// GuestMAC is the guest's address, xx:xx:xx:xx:xx:xx; optional, but a
	// VM without one gets a random one.
	GuestMAC string `json:"guest_mac,omitempty"`
}

// MachineConfiguration is the body of PUT /machine-config (definition
// MachineConfiguration; required: vcpu_count, mem_size_mib). Pre-boot only.
type MachineConfiguration struct {
	// VCPUCount is 1 to 32 (1 or even with SMT).
	VCPUCount int `json:"vcpu_count"`
	// MemSizeMiB is the guest's memory.
	MemSizeMiB int `json:"mem_size_mib"`
	// SMT enables simultaneous multithreading; false (the default) is not
	// sent.
	SMT bool `json:"smt,omitempty"`
}

// Logger is the body of PUT /logger (definition Logger; no required
// fields). Pre-boot only.
type Logger struct {
	// LogPath is a file or named pipe Firecracker writes its log to
	// (created if missing).
	LogPath string `json:"log_path,omitempty"`
	// Level is one of the LogLevel constants; empty means Firecracker's
	// default (Info).
	Level LogLevel `json:"level,omitempty"`
	// ShowLevel and ShowLogOrigin add the level and the source location to
	// each line.
	ShowLevel     bool `json:"show_level"`
	ShowLogOrigin bool `json:"show_log_origin"`
}

// LogLevel is the enum of Logger.level.
type LogLevel string

// The values of Logger.level the swagger lists (Firecracker reads them
// case-insensitively).
const (
	LogLevelError   LogLevel = "Error"
	LogLevelWarning LogLevel = "Warning"
	LogLevelInfo    LogLevel = "Info"
	LogLevelDebug   LogLevel = "Debug"
	LogLevelTrace   LogLevel = "Trace"
	LogLevelOff     LogLevel = "Off"
)

// InstanceActionInfo is the body of PUT /actions (definition
// InstanceActionInfo; required: action_type).
type InstanceActionInfo struct {
	ActionType ActionType `json:"action_type"`
}

// ActionType is the enum of InstanceActionInfo.action_type.
type ActionType string

// The actions the swagger lists.
const (
	// ActionInstanceStart boots the configured VM. Pre-boot only.
	ActionInstanceStart ActionType = "InstanceStart"
	// ActionSendCtrlAltDel presses ctrl-alt-delete on the guest's i8042
	// keyboard controller (x86 only). Post-boot only.
	ActionSendCtrlAltDel ActionType = "SendCtrlAltDel"
	// ActionFlushMetrics writes the metrics now. Post-boot only.
	ActionFlushMetrics ActionType = "FlushMetrics"
)

// InstanceInfo is the reply of GET / (definition InstanceInfo; all four
// fields required).
type InstanceInfo struct {
	AppName    string        `json:"app_name"`
	ID         string        `json:"id"`
	State      InstanceState `json:"state"`
	VMMVersion string        `json:"vmm_version"`
}

// InstanceState is the enum of InstanceInfo.state.
type InstanceState string

// The states the swagger lists.
const (
	StateNotStarted InstanceState = "Not started"
	StateRunning    InstanceState = "Running"
	StatePaused     InstanceState = "Paused"
)

// apiFault is the body of an error reply (definition Error). Firecracker's
// HTTP layer answers requests it cannot parse with {"error": "..."}
// instead, which Error also reads.
type apiFault struct {
	FaultMessage string `json:"fault_message"`
	Error        string `json:"error"`
}
