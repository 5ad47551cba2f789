// Package devcert makes a development certificate authority and a server
// and a client certificate it signed, for trying TLS and mutual TLS on one
// machine (`ratatoskr cert dev`) and for tests. Nothing it makes belongs in
// production: the CA's key is written next to its certificate.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Validity is how long the certificates are valid, from an hour before
// they are made (for clocks a little behind).
const Validity = 365 * 24 * time.Hour

// ClientName is the client certificate's common name: the identity a
// broker requiring client certificates sees.
const ClientName = "ratatoskr-dev-client"

// Bundle is a CA and the two certificates it signed, PEM-encoded.
type Bundle struct {
	CA, CAKey         []byte
	Server, ServerKey []byte
	Client, ClientKey []byte
}

// Files are the names Write gives the bundle's parts, in its directory.
var Files = struct{ CA, CAKey, Server, ServerKey, Client, ClientKey string }{
	"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem",
}

// Generate makes a bundle whose server certificate is valid for hosts
// (names or IP addresses) besides localhost, 127.0.0.1 and ::1.
func Generate(hosts ...string) (*Bundle, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := template("ratatoskr development CA", now)
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caTmpl.MaxPathLenZero = true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	b := &Bundle{CA: pemBlock("CERTIFICATE", caDER)}
	if b.CAKey, err = keyPEM(caKey); err != nil {
		return nil, err
	}

	srv := template("ratatoskr development server", now)
	srv.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if ip := net.ParseIP(h); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else if h != "" {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	if b.Server, b.ServerKey, err = sign(srv, ca, caKey); err != nil {
		return nil, err
	}
	cli := template(ClientName, now)
	cli.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if b.Client, b.ClientKey, err = sign(cli, ca, caKey); err != nil {
		return nil, err
	}
	return b, nil
}

func template(cn string, now time.Time) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"ratatoskr development"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

// sign makes a key and a certificate for tmpl signed by ca.
func sign(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (cert, key []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	key, err = keyPEM(k)
	return pemBlock("CERTIFICATE", der), key, err
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

// Write writes the bundle into dir (created if missing) under Files'
// names: certificates readable by all, keys by the owner only. It refuses
// to replace files that exist unless force is set.
func (b *Bundle) Write(dir string, force bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	parts := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{Files.CA, b.CA, 0o644}, {Files.CAKey, b.CAKey, 0o600},
		{Files.Server, b.Server, 0o644}, {Files.ServerKey, b.ServerKey, 0o600},
		{Files.Client, b.Client, 0o644}, {Files.ClientKey, b.ClientKey, 0o600},
	}
	if !force {
		for _, p := range parts {
			if _, err := os.Stat(filepath.Join(dir, p.name)); err == nil {
				return fmt.Errorf("%s exists; --force replaces it", filepath.Join(dir, p.name))
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	for _, p := range parts {
		if err := os.WriteFile(filepath.Join(dir, p.name), p.data, p.mode); err != nil {
			return err
		}
	}
	return nil
}

// ServerTLS is a server configuration with the bundle's server
// certificate; with clientCerts it requires client certificates the CA
// signed.
func (b *Bundle) ServerTLS(clientCerts bool) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(b.Server, b.ServerKey)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCerts {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, b.pool()
	}
	return cfg, nil
}

// ClientTLS is a client configuration that trusts the bundle's CA; with
// clientCert it presents the bundle's client certificate.
func (b *Bundle) ClientTLS(clientCert bool) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: b.pool(), MinVersion: tls.VersionTLS12}
	if clientCert {
		cert, err := tls.X509KeyPair(b.Client, b.ClientKey)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (b *Bundle) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b.CA)
	return p
}
