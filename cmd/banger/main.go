// Command banger is the whole of banger: the root daemon, the CLI and the
// guest init, in one static binary.
package main

import (
	"os"

	"banger/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
