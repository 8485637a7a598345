// Command coredns is CoreDNS with only the plugins the test cluster's DNS
// uses: the kubernetes plugin answers cluster.local from the API server, and
// every other name gets NXDOMAIN from the template plugin (there is no
// upstream: nothing leaves the machine). It is test infrastructure only.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver" // the DNS server type
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	coremain.Run()
}
