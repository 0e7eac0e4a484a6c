package fcshim

import (
	"errors"
	"strconv"
	"strings"
)

// The request bodies the shim accepts, each as a schema (for validation)
// and a struct (for decoding once valid). The schemas follow the
// definitions of Firecracker's swagger, src/firecracker/swagger/
// firecracker.yaml at v1.16.1, and the serde structs behind them
// (src/vmm/src/vmm_config/*.rs), which decide what the swagger leaves
// open: every struct here but TokenBucketConfig has deny_unknown_fields,
// Option fields take null, defaulted fields do not.

// bootSourceSchema: definition BootSource (required: kernel_image_path);
// serde BootSourceConfig.
var bootSourceSchema = &schema{definition: "BootSourceConfig", fields: []field{
	{name: "kernel_image_path", kind: kindString, required: true},
	{name: "initrd_path", kind: kindString, nullable: true},
	{name: "boot_args", kind: kindString, nullable: true},
}}

type bootSource struct {
	KernelImagePath string  `json:"kernel_image_path"`
	InitrdPath      *string `json:"initrd_path"`
	BootArgs        *string `json:"boot_args"`
}

// tokenBucketSchema: definition TokenBucket (required: size, refill_time;
// int64 >= 0); serde TokenBucketConfig (u64; no deny_unknown_fields, so
// unknown keys are ignored, as Firecracker does).
var tokenBucketSchema = &schema{definition: "TokenBucketConfig", allowUnknown: true, fields: []field{
	{name: "size", kind: kindUint, bits: 64, required: true},
	{name: "one_time_burst", kind: kindUint, bits: 64, nullable: true},
	{name: "refill_time", kind: kindUint, bits: 64, required: true},
}}

// rateLimiterSchema: definition RateLimiter (no required fields); serde
// RateLimiterConfig.
var rateLimiterSchema = &schema{definition: "RateLimiterConfig", fields: []field{
	{name: "bandwidth", kind: kindObject, object: tokenBucketSchema, nullable: true},
	{name: "ops", kind: kindObject, object: tokenBucketSchema, nullable: true},
}}

// driveSchema: definition Drive (required: drive_id, is_root_device;
// cache_type enum Unsafe|Writeback, default Unsafe; io_engine enum
// Sync|Async); serde BlockDeviceConfig, where cache_type has a default
// (not nullable) and the virtio-block and vhost-user fields are Options.
var driveSchema = &schema{definition: "BlockDeviceConfig", fields: []field{
	{name: "drive_id", kind: kindString, required: true},
	{name: "partuuid", kind: kindString, nullable: true},
	{name: "is_root_device", kind: kindBool, required: true},
	{name: "cache_type", kind: kindString, enum: []string{"Unsafe", "Writeback"}},
	{name: "is_read_only", kind: kindBool, nullable: true},
	{name: "path_on_host", kind: kindString, nullable: true},
	{name: "rate_limiter", kind: kindObject, object: rateLimiterSchema, nullable: true},
	{name: "io_engine", kind: kindString, enum: []string{"Sync", "Async"}, nullable: true},
	{name: "socket", kind: kindString, nullable: true},
}}

type drive struct {
	DriveID      string       `json:"drive_id"`
	PartUUID     *string      `json:"partuuid"`
	IsRootDevice bool         `json:"is_root_device"`
	CacheType    string       `json:"cache_type"`
	IsReadOnly   *bool        `json:"is_read_only"`
	PathOnHost   *string      `json:"path_on_host"`
	RateLimiter  *rateLimiter `json:"rate_limiter"`
	IOEngine     *string      `json:"io_engine"`
	Socket       *string      `json:"socket"`
}

type rateLimiter struct {
	Bandwidth *tokenBucket `json:"bandwidth"`
	Ops       *tokenBucket `json:"ops"`
}

type tokenBucket struct {
	Size         uint64  `json:"size"`
	OneTimeBurst *uint64 `json:"one_time_burst"`
	RefillTime   uint64  `json:"refill_time"`
}

// networkInterfaceSchema: definition NetworkInterface (required: iface_id,
// host_dev_name; mtu 68-65535); serde NetworkInterfaceConfig, whose
// guest_mac is a MacAddr (six two-digit hex groups) and mtu a u16.
var networkInterfaceSchema = &schema{definition: "NetworkInterfaceConfig", fields: []field{
	{name: "iface_id", kind: kindString, required: true},
	{name: "host_dev_name", kind: kindString, required: true},
	{name: "guest_mac", kind: kindString, nullable: true, parse: parseMAC},
	{name: "mtu", kind: kindUint, bits: 16, nullable: true},
	{name: "rx_rate_limiter", kind: kindObject, object: rateLimiterSchema, nullable: true},
	{name: "tx_rate_limiter", kind: kindObject, object: rateLimiterSchema, nullable: true},
}}

type networkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      *string      `json:"guest_mac"`
	MTU           *uint16      `json:"mtu"`
	RxRateLimiter *rateLimiter `json:"rx_rate_limiter"`
	TxRateLimiter *rateLimiter `json:"tx_rate_limiter"`
}

// parseMAC follows MacAddr::from_str: exactly six ':'-separated groups of
// exactly two hex digits.
func parseMAC(s string) error {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return errors.New("The provided MAC address is invalid.")
	}
	for _, p := range parts {
		if len(p) != 2 {
			return errors.New("The provided MAC address is invalid.")
		}
		if _, err := strconv.ParseUint(p, 16, 8); err != nil {
			return errors.New("The provided MAC address is invalid.")
		}
	}
	return nil
}

// machineConfigSchema: definition MachineConfiguration (required:
// mem_size_mib, vcpu_count; vcpu_count 1-32; cpu_template enum
// CpuTemplate; huge_pages enum None|2M, default None); serde
// MachineConfig: vcpu_count u8, mem_size_mib usize, smt,
// track_dirty_pages and huge_pages defaulted (not nullable), cpu_template
// an Option.
var machineConfigSchema = &schema{definition: "MachineConfig", fields: []field{
	{name: "vcpu_count", kind: kindUint, bits: 8, required: true},
	{name: "mem_size_mib", kind: kindUint, bits: 64, required: true},
	{name: "smt", kind: kindBool},
	{name: "cpu_template", kind: kindString, nullable: true, enum: []string{"C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"}},
	{name: "track_dirty_pages", kind: kindBool},
	{name: "huge_pages", kind: kindString, enum: []string{"None", "2M"}},
}}

type machineConfig struct {
	VCPUCount       uint8   `json:"vcpu_count"`
	MemSizeMiB      uint64  `json:"mem_size_mib"`
	SMT             bool    `json:"smt"`
	CPUTemplate     *string `json:"cpu_template,omitempty"`
	TrackDirtyPages bool    `json:"track_dirty_pages"`
	HugePages       string  `json:"huge_pages"`
}

// loggerSchema: definition Logger (no required fields; level enum Error,
// Warning, Info, Debug, Trace, Off, "case-insensitive"); serde
// LoggerConfig, whose LevelFilter also takes "warn" and answers any other
// value with "Invalid LevelFilter".
var loggerSchema = &schema{definition: "LoggerConfig", fields: []field{
	{name: "log_path", kind: kindString, nullable: true},
	{name: "level", kind: kindString, nullable: true, foldCase: true, enumErr: "Invalid LevelFilter",
		enum: []string{"Error", "Warning", "Warn", "Info", "Debug", "Trace", "Off"}},
	{name: "show_level", kind: kindBool, nullable: true},
	{name: "show_log_origin", kind: kindBool, nullable: true},
	{name: "module", kind: kindString, nullable: true},
}}

type logger struct {
	LogPath       *string `json:"log_path"`
	Level         *string `json:"level"`
	ShowLevel     *bool   `json:"show_level"`
	ShowLogOrigin *bool   `json:"show_log_origin"`
	Module        *string `json:"module"`
}

// metricsSchema: definition Metrics (required: metrics_path); serde
// MetricsConfig.
var metricsSchema = &schema{definition: "MetricsConfig", fields: []field{
	{name: "metrics_path", kind: kindString, required: true},
}}

type metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// actionSchema: definition InstanceActionInfo (required: action_type;
// enum FlushMetrics, InstanceStart, SendCtrlAltDel); serde ActionBody.
var actionSchema = &schema{definition: "ActionBody", fields: []field{
	{name: "action_type", kind: kindString, required: true, enum: []string{"FlushMetrics", "InstanceStart", "SendCtrlAltDel"}},
}}

type action struct {
	ActionType string `json:"action_type"`
}

// instanceInfo is the reply of GET / (definition InstanceInfo).
type instanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

// The values of InstanceInfo.state the shim reaches (it never pauses).
const (
	stateNotStarted = "Not started"
	stateRunning    = "Running"
)
