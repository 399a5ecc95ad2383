package main

// The fixture's own check: start the control plane as the program does, then do what svcnet's
// tests do without a kubelet or scheduler (a Node, a Service, a Pod with spec.nodeName, the Pod's
// status written through the status subresource) and see the real EndpointSlice controller turn
// them into a slice with the Pod's address and hostname.
//
// The test binary is the program too (see TestMain): it starts itself as the control plane, which
// starts itself as kube-apiserver and kube-controller-manager, so nothing is built but the test.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// asProgram marks a run of the test binary as the program itself.
const asProgram = "SVCNET_CONTROLPLANE_AS_PROGRAM"

func TestMain(m *testing.M) {
	if os.Getenv(asProgram) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func testFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startControlPlane runs the program and returns a client once it printed its ready line.
func startControlPlane(t *testing.T) (*rest.Config, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	apiPort := testFreePort(t)
	cmd := exec.Command(exe,
		fmt.Sprintf("--etcd-port=%d", testFreePort(t)),
		fmt.Sprintf("--apiserver-port=%d", apiPort),
		"--kubeconfig-out="+kubeconfig,
	)
	cmd.Env = append(os.Environ(), asProgram+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("control plane exited with %v after SIGTERM", err)
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("control plane did not stop within 60s of SIGTERM")
		}
	})

	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	want := fmt.Sprintf("controlplane ready kubeconfig=%s apiserver=https://127.0.0.1:%d", kubeconfig, apiPort)
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatalf("control plane closed stdout without a ready line")
		}
		if line != want {
			t.Fatalf("stdout line\n got: %q\nwant: %q", line, want)
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("control plane not ready after 5 minutes")
	}
	t.Logf("control plane ready after %v", time.Since(started).Round(time.Millisecond))
	go func() {
		for line := range lines {
			t.Errorf("unexpected further stdout line: %q", line)
		}
	}()

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.TLSClientConfig.CAData) == 0 || cfg.TLSClientConfig.Insecure {
		t.Fatalf("kubeconfig should verify the server against CA data")
	}
	return cfg, kubeconfig
}

func TestEndpointSliceFromPodStatus(t *testing.T) {
	cfg, _ := startControlPlane(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// RBAC is on: an anonymous client may read /readyz but not list pods.
	anon := rest.AnonymousClientConfig(cfg)
	if _, err := kubernetes.NewForConfigOrDie(anon).CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("anonymous pod list: want Forbidden, got %v", err)
	}

	// A fresh namespace: pod creation there goes through the default ServiceAccount admission,
	// which needs the serviceaccount controller to have made the namespace's `default` account.
	const ns = "fixture-check"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The EndpointSlice controller leaves out pods whose Node does not exist.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"topology.kubernetes.io/zone": "zone-a"}}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(svc.Spec.ClusterIP); ip == nil || !(&net.IPNet{IP: net.IPv4(10, 96, 0, 0), Mask: net.CIDRMask(16, 32)}).Contains(ip) {
		t.Fatalf("ClusterIP %q not in 10.96.0.0/16", svc.Spec.ClusterIP)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName:  "node-a",
			Hostname:  "web-0",
			Subdomain: "web",
			Containers: []corev1.Container{{
				Name:  "web",
				Image: "example.invalid/web:never-pulled",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
	pod, err = cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No kubelet: write what it would through the status subresource. The address is only data
	// here; nothing is sent to it.
	const podIP = "10.244.1.5"
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     podIP,
		PodIPs:    []corev1.PodIP{{IP: podIP}},
		HostIP:    "192.0.2.10",
		HostIPs:   []corev1.HostIP{{IP: "192.0.2.10"}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	var last string
	for {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			t.Fatal(err)
		}
		if len(slices.Items) == 1 {
			if desc := checkSlice(&slices.Items[0], podIP); desc == "" {
				t.Logf("EndpointSlice %s: %s", slices.Items[0].Name, describe(&slices.Items[0]))
				return
			} else {
				last = desc
			}
		} else {
			last = fmt.Sprintf("%d slices", len(slices.Items))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no matching EndpointSlice; last seen: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func checkSlice(s *discoveryv1.EndpointSlice, podIP string) string {
	if s.AddressType != discoveryv1.AddressTypeIPv4 {
		return "address type " + string(s.AddressType)
	}
	if len(s.Ports) != 1 || s.Ports[0].Port == nil || *s.Ports[0].Port != 8080 || s.Ports[0].Name == nil || *s.Ports[0].Name != "http" {
		return "ports: " + describe(s)
	}
	if len(s.Endpoints) != 1 {
		return "endpoints: " + describe(s)
	}
	ep := s.Endpoints[0]
	switch {
	case len(ep.Addresses) != 1 || ep.Addresses[0] != podIP,
		ep.Hostname == nil || *ep.Hostname != "web-0",
		ep.NodeName == nil || *ep.NodeName != "node-a",
		ep.Zone == nil || *ep.Zone != "zone-a",
		ep.Conditions.Ready == nil || !*ep.Conditions.Ready,
		ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || ep.TargetRef.Name != "web-0":
		return "endpoint: " + describe(s)
	}
	return ""
}

func describe(s *discoveryv1.EndpointSlice) string {
	var b strings.Builder
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "port %s=%d ", deref(p.Name), derefInt(p.Port))
	}
	for _, ep := range s.Endpoints {
		ready := ep.Conditions.Ready != nil && *ep.Conditions.Ready
		fmt.Fprintf(&b, "endpoint %v hostname=%s node=%s zone=%s ready=%v ", ep.Addresses, deref(ep.Hostname), deref(ep.NodeName), deref(ep.Zone), ready)
	}
	return strings.TrimSpace(b.String())
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func derefInt(i *int32) int32 {
	if i == nil {
		return -1
	}
	return *i
}
