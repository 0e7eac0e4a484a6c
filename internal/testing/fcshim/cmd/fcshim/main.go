// Command fcshim is a TEST-ONLY Firecracker-compatible stand-in that boots
// under QEMU; see package banger/internal/testing/fcshim. It is never
// shipped.
package main

import (
	"os"

	"banger/internal/testing/fcshim"
)

func main() { os.Exit(fcshim.Main(os.Args)) }
