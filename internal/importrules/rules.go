package importrules

import (
	"fmt"
	"sort"
	"strings"
)

const (
	module    = "banger"
	daemonPkg = module + "/internal/daemon"
	cliPkg    = module + "/internal/cli"
)

// Graph maps a package to its imports: direct ones in Direct, the whole
// transitive closure in Deps (as `go list -deps` reports it).
type Graph struct {
	Direct map[string][]string
	Deps   map[string][]string
}

// isLeaf reports whether p is a daemon subpackage (internal/daemon/X...).
func isLeaf(p string) bool { return strings.HasPrefix(p, daemonPkg+"/") }

// leafRoot is the leaf p belongs to (its first path element below daemon).
func leafRoot(p string) string {
	rest := strings.TrimPrefix(p, daemonPkg+"/")
	first, _, _ := strings.Cut(rest, "/")
	return daemonPkg + "/" + first
}

// outsideDaemon lists the packages that sit below the daemon and the CLI:
// shared infrastructure both sides use.
var outsideDaemon = []string{"errdefs", "layout", "config", "store", "rpc", "system", "version"}

// Violations returns every forbidden edge in g, each with its reason.
func Violations(g Graph) []string {
	var out []string
	for pkg, imports := range g.Direct {
		for _, imp := range imports {
			if imp == daemonPkg && pkg != cliPkg && !strings.HasSuffix(pkg, "_test") {
				out = append(out, fmt.Sprintf("%s imports %s: only internal/cli may import the daemon (its surface is Open/Serve/Close/Doctor; everything else goes through RPC dispatch)", pkg, imp))
			}
		}
	}
	for pkg, deps := range g.Deps {
		for _, dep := range deps {
			switch {
			case isLeaf(pkg) && dep == daemonPkg:
				out = append(out, fmt.Sprintf("%s depends on %s: a leaf subpackage must not import the daemon (it would be a cycle in design if not in code; pass explicit dependencies instead)", pkg, dep))
			case isLeaf(pkg) && isLeaf(dep) && leafRoot(dep) != leafRoot(pkg):
				out = append(out, fmt.Sprintf("%s depends on %s: daemon subpackages are leaves and must not import one another (move the shared piece outside internal/daemon or into the daemon)", pkg, dep))
			case isShared(pkg) && (dep == daemonPkg || isLeaf(dep) || dep == cliPkg):
				out = append(out, fmt.Sprintf("%s depends on %s: shared infrastructure must not depend on the daemon or the CLI that build on it", pkg, dep))
			}
		}
	}
	sort.Strings(out)
	return out
}

func isShared(p string) bool {
	for _, s := range outsideDaemon {
		base := module + "/internal/" + s
		if p == base || strings.HasPrefix(p, base+"/") {
			return true
		}
	}
	return false
}
