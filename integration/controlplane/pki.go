package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki is what the control plane authenticates with, made at the first start and written under
// dir (and reused from there by a restart on the same --data-dir): a CA, the API server's
// serving certificate signed by it (so clients verify it against the CA, as they would in a real
// cluster), the service-account signing key, and the admin token.
type pki struct {
	caCertPEM     []byte
	caFile        string
	servingCert   string
	servingKey    string
	saKey         string
	tokenAuthFile string
	adminToken    string
	adminUser     string
	adminGroup    string
}

func writePEM(path, typ string, der []byte, mode os.FileMode) ([]byte, error) {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	return b, os.WriteFile(path, b, mode)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
}

// loadOrNewPKI reuses the files a previous run left in dir (a kept --data-dir), so that a
// restarted control plane has the same CA, admin token and service-account key and the
// kubeconfigs and tokens handed out before stay valid; otherwise it makes new ones.
func loadOrNewPKI(dir string, firstServiceIP net.IP) (*pki, error) {
	p := pkiPaths(dir)
	for _, f := range []string{p.caFile, p.servingCert, p.servingKey, p.saKey, p.tokenAuthFile} {
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			return newPKI(dir, firstServiceIP)
		} else if err != nil {
			return nil, err
		}
	}
	var err error
	if p.caCertPEM, err = os.ReadFile(p.caFile); err != nil {
		return nil, err
	}
	tokens, err := os.ReadFile(p.tokenAuthFile)
	if err != nil {
		return nil, err
	}
	// The one line newPKI wrote: token,user,uid,"group".
	token, _, ok := strings.Cut(string(tokens), ",")
	if !ok || token == "" {
		return nil, fmt.Errorf("%s: no token", p.tokenAuthFile)
	}
	p.adminToken = token
	return p, nil
}

func pkiPaths(dir string) *pki {
	return &pki{
		caFile:        filepath.Join(dir, "ca.crt"),
		servingCert:   filepath.Join(dir, "apiserver.crt"),
		servingKey:    filepath.Join(dir, "apiserver.key"),
		saKey:         filepath.Join(dir, "sa.key"),
		tokenAuthFile: filepath.Join(dir, "tokens.csv"),
		adminUser:     "admin",
		adminGroup:    "system:masters",
	}
}

// newPKI writes the files into dir. firstServiceIP is the `kubernetes` Service's ClusterIP (the
// first address of the service range), which goes into the serving certificate's names too.
func newPKI(dir string, firstServiceIP net.IP) (*pki, error) {
	p := pkiPaths(dir)
	now := time.Now().Add(-time.Hour) // tolerate a little clock skew
	notAfter := now.Add(10 * 365 * 24 * time.Hour)

	// CA.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "svcnet-controlplane-ca"},
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	if p.caCertPEM, err = writePEM(p.caFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}

	// Serving certificate: an end-entity certificate (not a CA), for loopback and the names the
	// API server has inside the cluster.
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if sn, err = serial(); err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), firstServiceIP},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if _, err = writePEM(p.servingCert, "CERTIFICATE", srvDER, 0o644); err != nil {
		return nil, err
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return nil, err
	}
	if _, err = writePEM(p.servingKey, "EC PRIVATE KEY", srvKeyDER, 0o600); err != nil {
		return nil, err
	}

	// Service-account signing key (RSA, RS256: what every client library verifies). The API
	// server reads the public half from the same private-key file.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if _, err = writePEM(p.saKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey), 0o600); err != nil {
		return nil, err
	}

	// Static admin token: token,user,uid,"group".
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	p.adminToken = hex.EncodeToString(tok)
	line := fmt.Sprintf("%s,%s,%s,\"%s\"\n", p.adminToken, p.adminUser, p.adminUser, p.adminGroup)
	if err := os.WriteFile(p.tokenAuthFile, []byte(line), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}
