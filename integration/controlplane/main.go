// Command controlplane runs a real, minimal Kubernetes control plane on loopback for svcnet's
// integration tests: embedded etcd, kube-apiserver and kube-controller-manager (EndpointSlice,
// EndpointSlice mirroring, ServiceAccount and Namespace controllers only), all from the upstream Go
// modules.
// There is no kubelet and no scheduler: tests set spec.nodeName themselves and write pod status
// (Ready condition, podIPs) through the status subresource.
//
//	controlplane --etcd-port 23790 --apiserver-port 6443 --kubeconfig-out /tmp/kubeconfig
//
// prints, on stdout and only once everything is up:
//
//	controlplane ready kubeconfig=/tmp/kubeconfig apiserver=https://127.0.0.1:6443
//
// and runs until SIGTERM or SIGINT, then stops everything and removes its temporary directory.
// Everything else (its own and the components' logs) goes to stderr.
//
// kube-apiserver and kube-controller-manager each install process-wide state (a signal handler
// that may be set up only once, flag and feature-gate registries), so they cannot share one
// process: this binary runs each of them as a child process of itself (`controlplane
// kube-apiserver ARGS...`, `controlplane kube-controller-manager ARGS...`), and etcd in the
// parent.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // as the upstream mains have it (CronJob time zones)

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as the upstream mains have it
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as the upstream mains have it
	_ "k8s.io/component-base/metrics/prometheus/version"  // as the upstream mains have it
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

const (
	subAPIServer         = "kube-apiserver"
	subControllerManager = "kube-controller-manager"
)

func main() {
	// Child modes: exactly the upstream mains.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case subAPIServer:
			cmd := apiserverapp.NewAPIServerCommand()
			cmd.SetArgs(os.Args[2:])
			os.Exit(cli.Run(cmd))
		case subControllerManager:
			cmd := kcmapp.NewControllerManagerCommand()
			cmd.SetArgs(os.Args[2:])
			os.Exit(cli.Run(cmd))
		}
	}
	os.Exit(run(os.Args[1:]))
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type options struct {
	etcdPort          int
	etcdPeerPort      int
	apiserverPort     int
	kcmPort           int
	kubeconfigOut     string
	dataDir           string
	serviceCIDR       string
	advertiseAddress  string
	verbosity         int
	readyTimeout      time.Duration
	apiserverArgs     stringList
	controllerMgrArgs stringList
	parentPID         int
}

func run(args []string) int {
	// Children must be started from a thread that lives as long as the process: Pdeathsig is tied
	// to the thread that forked, and a locked main goroutine keeps its thread.
	runtime.LockOSThread()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("controlplane: ")
	log.SetOutput(os.Stderr)

	var o options
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.IntVar(&o.etcdPort, "etcd-port", 0, "etcd client port on 127.0.0.1 (required)")
	fs.IntVar(&o.etcdPeerPort, "etcd-peer-port", 0, "etcd peer port on 127.0.0.1 (0: a free one)")
	fs.IntVar(&o.apiserverPort, "apiserver-port", 0, "kube-apiserver HTTPS port on 127.0.0.1 (required)")
	fs.IntVar(&o.kcmPort, "controller-manager-port", 0, "kube-controller-manager HTTPS (healthz) port on 127.0.0.1 (0: a free one)")
	fs.StringVar(&o.kubeconfigOut, "kubeconfig-out", "", "where to write the admin kubeconfig once ready (required)")
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for etcd data, certificates and keys; kept on exit (default: a fresh temporary directory, removed on exit)")
	fs.StringVar(&o.serviceCIDR, "service-cluster-ip-range", "10.96.0.0/16", "Service ClusterIP range")
	fs.StringVar(&o.advertiseAddress, "advertise-address", "127.0.0.1",
		"kube-apiserver's advertised address; when loopback (the default) the `kubernetes` Service gets no endpoints, since Endpoints may not hold loopback addresses")
	fs.IntVar(&o.verbosity, "v", 0, "klog verbosity of kube-apiserver and kube-controller-manager")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 5*time.Minute, "give up if not ready by then")
	fs.Var(&o.apiserverArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--feature-gates=X=true (repeatable)")
	fs.Var(&o.controllerMgrArgs, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	fs.IntVar(&o.parentPID, "parent-pid", 0,
		"stop (as on SIGTERM) once the process with this PID is gone: a test binary that cannot run destructors for its process-wide fixture passes its own PID (0: off)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		log.Printf("unexpected arguments: %q", fs.Args())
		return 2
	}
	if o.etcdPort == 0 || o.apiserverPort == 0 || o.kubeconfigOut == "" {
		log.Printf("--etcd-port, --apiserver-port and --kubeconfig-out are required")
		fs.Usage()
		return 2
	}
	if abs, err := filepath.Abs(o.kubeconfigOut); err == nil {
		o.kubeconfigOut = abs
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if o.parentPID != 0 {
		var orphaned context.CancelFunc
		ctx, orphaned = context.WithCancel(ctx)
		defer orphaned()
		go watchParent(o.parentPID, orphaned)
	}

	cp := &controlPlane{opts: o}
	err := cp.start(ctx)
	if err == nil {
		fmt.Printf("controlplane ready kubeconfig=%s apiserver=%s\n", o.kubeconfigOut, cp.apiserverURL)
		os.Stdout.Sync()
		select {
		case <-ctx.Done():
			log.Printf("signal received, stopping")
		case c := <-cp.exited:
			err = fmt.Errorf("%s exited unexpectedly: %v", c.name, c.err)
		case e := <-cp.etcd.Err():
			err = fmt.Errorf("etcd: %v", e)
		}
	} else if ctx.Err() != nil {
		log.Printf("signal received while starting, stopping")
		err = nil
	}
	cp.stop()
	if err != nil {
		log.Printf("error: %v", err)
		return 1
	}
	log.Printf("stopped")
	return 0
}

// watchParent calls gone once process pid no longer exists (or is a zombie nobody reaps, which
// signal 0 cannot tell apart from a live process, hence /proc). Polled: a process cannot wait for
// one that is not its child.
func watchParent(pid int, gone context.CancelFunc) {
	for {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		// The state follows the parenthesised command name, which may itself hold spaces.
		if err != nil || zombie(stat) {
			log.Printf("parent process %d is gone, stopping", pid)
			gone()
			return
		}
		time.Sleep(time.Second)
	}
}

func zombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && strings.HasPrefix(s[i+1:], " Z")
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

type controlPlane struct {
	opts         options
	dir          string
	removeDir    bool
	etcd         *embed.Etcd
	etcdLogLevel zap.AtomicLevel
	children     []*child // in start order
	exited       chan *child
	apiserverURL string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// firstIP is the first usable address of a CIDR: the `kubernetes` Service's ClusterIP.
func firstIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP)
	ip[len(ip)-1]++
	return ip, nil
}

func (cp *controlPlane) start(ctx context.Context) error {
	o := &cp.opts
	began := time.Now()
	cp.exited = make(chan *child, 4)

	if o.dataDir != "" {
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			return err
		}
		cp.dir = o.dataDir
	} else {
		d, err := os.MkdirTemp("", "svcnet-controlplane-")
		if err != nil {
			return err
		}
		cp.dir, cp.removeDir = d, true
	}
	log.Printf("data directory %s", cp.dir)

	var err error
	if o.etcdPeerPort == 0 {
		if o.etcdPeerPort, err = freePort(); err != nil {
			return err
		}
	}
	if o.kcmPort == 0 {
		if o.kcmPort, err = freePort(); err != nil {
			return err
		}
	}

	svcIP, err := firstIP(o.serviceCIDR)
	if err != nil {
		return fmt.Errorf("--service-cluster-ip-range: %w", err)
	}
	pkiDir := filepath.Join(cp.dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return err
	}
	p, err := loadOrNewPKI(pkiDir, svcIP)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	cp.apiserverURL = "https://127.0.0.1:" + strconv.Itoa(o.apiserverPort)
	internalKubeconfig := filepath.Join(cp.dir, "admin.kubeconfig")
	if err := writeKubeconfig(internalKubeconfig, cp.apiserverURL, p); err != nil {
		return err
	}

	// etcd.
	if err := cp.startEtcd(ctx); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	log.Printf("etcd ready on 127.0.0.1:%d after %v", o.etcdPort, time.Since(began).Round(time.Millisecond))

	// kube-apiserver.
	reconciler := "lease"
	if ip := net.ParseIP(o.advertiseAddress); ip == nil || ip.IsLoopback() {
		reconciler = "none"
	}
	apiArgs := []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(o.etcdPort),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(o.apiserverPort),
		"--advertise-address=" + o.advertiseAddress,
		"--endpoint-reconciler-type=" + reconciler,
		"--cert-dir=" + filepath.Join(cp.dir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--authorization-mode=Node,RBAC",
		"--token-auth-file=" + p.tokenAuthFile,
		"--service-account-key-file=" + p.saKey,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + o.serviceCIDR,
		"--allow-privileged=true",
		"--profiling=false",
		// On SIGTERM, end open watches after a second: otherwise a client's watch (there always
		// is one in a test) holds the API server up until stop() kills it 20 s later.
		"--shutdown-watch-termination-grace-period=1s",
		"--v=" + strconv.Itoa(o.verbosity),
	}
	apiArgs = append(apiArgs, o.apiserverArgs...)
	if err := cp.startChild(subAPIServer, apiArgs); err != nil {
		return err
	}
	tlsConf := &tls.Config{RootCAs: x509.NewCertPool()}
	tlsConf.RootCAs.AppendCertsFromPEM(p.caCertPEM)
	apiClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	if err := cp.waitFor(ctx, "kube-apiserver /readyz", func() (bool, string) {
		return probe(apiClient, cp.apiserverURL+"/readyz", p.adminToken, "")
	}); err != nil {
		return err
	}
	log.Printf("kube-apiserver ready on %s after %v", cp.apiserverURL, time.Since(began).Round(time.Millisecond))

	// kube-controller-manager.
	kcmArgs := []string{
		"--kubeconfig=" + internalKubeconfig,
		// EndpointSlices from Services and Pods, and from selector-less Services' Endpoints; each
		// namespace's `default` ServiceAccount, which the (default-on) ServiceAccount admission
		// plugin waits for when a pod is created; and namespace deletion, which without its
		// controller would leave a deleted namespace Terminating with its objects forever.
		"--controllers=endpointslice-controller,endpointslice-mirroring-controller,serviceaccount-controller,namespace-controller",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(o.kcmPort),
		"--cert-dir=" + filepath.Join(cp.dir, "controller-manager-certs"),
		"--profiling=false",
		"--v=" + strconv.Itoa(o.verbosity),
	}
	kcmArgs = append(kcmArgs, o.controllerMgrArgs...)
	if err := cp.startChild(subControllerManager, kcmArgs); err != nil {
		return err
	}
	// Its /healthz lists a check per controller once the controllers are built; their informers
	// and workers start right after.
	kcmClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // its own self-signed loopback cert
	}}
	kcmURL := "https://127.0.0.1:" + strconv.Itoa(o.kcmPort) + "/healthz?verbose"
	if err := cp.waitFor(ctx, "kube-controller-manager /healthz", func() (bool, string) {
		return probe(kcmClient, kcmURL, "", "[+]endpointslice-controller ok")
	}); err != nil {
		return err
	}
	log.Printf("kube-controller-manager running (healthz on 127.0.0.1:%d) after %v", o.kcmPort, time.Since(began).Round(time.Millisecond))

	// The kubeconfig appears only now, whole (written beside, then renamed).
	if err := os.MkdirAll(filepath.Dir(o.kubeconfigOut), 0o755); err != nil {
		return err
	}
	tmp := o.kubeconfigOut + ".tmp"
	if err := writeKubeconfig(tmp, cp.apiserverURL, p); err != nil {
		return err
	}
	if err := os.Rename(tmp, o.kubeconfigOut); err != nil {
		return err
	}
	log.Printf("ready after %v", time.Since(began).Round(time.Millisecond))
	return nil
}

func (cp *controlPlane) startEtcd(ctx context.Context) error {
	o := &cp.opts
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = filepath.Join(cp.dir, "etcd")
	// Errors only, without stack traces; raised to "fatal" in stop(), since closing makes etcd
	// log its listeners' "server closed" as errors.
	cp.etcdLogLevel = zap.NewAtomicLevelAt(zap.ErrorLevel)
	zc := zap.NewProductionConfig()
	zc.Level = cp.etcdLogLevel
	zc.DisableStacktrace = true
	zc.Sampling = nil
	zc.OutputPaths = []string{"stderr"}
	zc.ErrorOutputPaths = []string{"stderr"}
	lg, err := zc.Build(zap.Fields(zap.String("component", "etcd")))
	if err != nil {
		return err
	}
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(o.etcdPort)}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(o.etcdPeerPort)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	// A throwaway store: no fsync cost worth paying, and nothing to compact for long.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	cp.etcd = e
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return err
	case <-time.After(60 * time.Second):
		return errors.New("not ready after 60s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (cp *controlPlane) startChild(name string, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, append([]string{name}, args...)...)
	// Nothing but the ready line goes to our stdout.
	cmd.Stdout = prefixWriter(name)
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a terminal's Ctrl-C reaches us only; we stop the children in order
		Pdeathsig: syscall.SIGKILL, // and should we die without doing so, they go too
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
		cp.exited <- c
	}()
	cp.children = append(cp.children, c)
	log.Printf("started %s (pid %d)", name, cmd.Process.Pid)
	return nil
}

// prefixWriter copies a child's output to stderr line by line, each line prefixed with its name.
func prefixWriter(name string) io.Writer {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			fmt.Fprintf(os.Stderr, "[%s] %s\n", name, sc.Text())
		}
		io.Copy(io.Discard, r)
	}()
	return w
}

// waitFor polls check until it reports true, a child exits, ctx ends or the ready timeout passes.
func (cp *controlPlane) waitFor(ctx context.Context, what string, check func() (bool, string)) error {
	deadline := time.Now().Add(cp.opts.readyTimeout)
	last := ""
	for {
		ok, detail := check()
		if ok {
			return nil
		}
		last = detail
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %v (last: %s)", what, cp.opts.readyTimeout, last)
		}
		select {
		case c := <-cp.exited:
			cp.exited <- c // for stop() and run()
			return fmt.Errorf("waiting for %s: %s exited: %v", what, c.name, c.err)
		case err := <-cp.etcd.Err():
			return fmt.Errorf("waiting for %s: etcd: %v", what, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// probe GETs url and reports whether it answered 200 (and, if want is set, with a body that
// contains it).
func probe(c *http.Client, url, token, want string) (bool, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if want != "" && !strings.Contains(string(body), want) {
		return false, fmt.Sprintf("no %q yet", want)
	}
	return true, ""
}

// stop ends the children in reverse order (SIGTERM, then SIGKILL after a grace period), then
// etcd, then removes the temporary directory.
func (cp *controlPlane) stop() {
	for i := len(cp.children) - 1; i >= 0; i-- {
		c := cp.children[i]
		select {
		case <-c.done:
			continue
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			log.Printf("%s did not stop within 20s, killing it", c.name)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	if cp.etcd != nil {
		cp.etcdLogLevel.SetLevel(zap.FatalLevel)
		cp.etcd.Close()
	}
	if cp.removeDir && cp.dir != "" {
		if err := os.RemoveAll(cp.dir); err != nil {
			log.Printf("removing %s: %v", cp.dir, err)
		}
	}
}

func writeKubeconfig(path, server string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["controlplane"] = &clientcmdapi.Cluster{
		Server:                   server,
		CertificateAuthorityData: p.caCertPEM,
	}
	cfg.AuthInfos[p.adminUser] = &clientcmdapi.AuthInfo{Token: p.adminToken}
	cfg.Contexts["controlplane"] = &clientcmdapi.Context{Cluster: "controlplane", AuthInfo: p.adminUser, Namespace: "default"}
	cfg.CurrentContext = "controlplane"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
