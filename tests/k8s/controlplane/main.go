// Command controlplane is one executable holding the Kubernetes control
// plane that the test suite runs on this machine (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) and its node's agents (kubelet,
// kube-proxy), linked from their published Go modules (versions pinned in
// go.mod). It is test infrastructure only.
//
// The component is chosen by the first argument, or by the name the
// executable was called by (a link named kube-apiserver, say):
//
//	controlplane kube-apiserver --etcd-servers=... [flags]
//	controlplane etcd --data-dir=... [flags]
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zones, as the upstream commands link it

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var kube = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-proxy":              proxy.NewProxyCommand,
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
}

func names() []string {
	all := []string{"etcd"}
	for name := range kube {
		all = append(all, name)
	}
	sort.Strings(all)
	return all
}

func run(name string, args []string) int {
	// Each component reads os.Args itself: give it the arguments it expects.
	os.Args = append([]string{name}, args...)
	if name == "etcd" {
		etcdmain.Main(os.Args)
		return 0
	}
	command, ok := kube[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown component %q; one of %v\n", name, names())
		return 2
	}
	return cli.Run(command())
}

func main() {
	self := filepath.Base(os.Args[0])
	if _, ok := kube[self]; ok || self == "etcd" {
		os.Exit(run(self, os.Args[1:]))
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintf(os.Stderr, "usage: %s COMPONENT [flags]; COMPONENT is one of %v\n", self, names())
		os.Exit(2)
	}
	os.Exit(run(os.Args[1], os.Args[2:]))
}
