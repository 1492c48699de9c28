/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: virtio-net on the virtio PCI transport, driven as a
 * hostile guest would: random queue sizes, descriptor tables, available
 * rings, indirect tables, feature sets (modern or legacy driver), then a
 * random sequence of kicks, received frames, resets and register writes.
 * The real machine core runs underneath (vmm_create_test: guest RAM, the
 * I/O buses, PCI), with a backend that only counts what it is sent.
 *
 * Input: 8-byte header {flags, queue size log2, tx avail idx (u16), rx
 * avail idx (u16), used_event (u16)}, then both descriptor tables
 * (16 bytes per entry), both available rings (2 bytes per entry), 64 ops
 * of 4 bytes {op, arg, u16 value}: kicks, frames arriving, available index
 * moves, BAR and config space writes, link changes; the rest fills the data area that
 * descriptors and indirect tables point into.  Descriptor addresses are
 * folded into guest RAM unless flag bit 7 is set (then they are the
 * fuzzer's, out of range included); lengths stay the fuzzer's (mod 8 KiB,
 * so zero happens).
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * fuzz-sources: vmm/kvm.c vmm/bus.c vmm/pci.c vmm/devices/virtio_pci.c vmm/devices/virtqueue.c vmm/devices/virtio_net.c vmm/net/net.c vmm/net/slirp.c vmm/net/tap.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/devices/virtio_net.h"
#include "vmm/devices/virtio_pci.h"
#include "vmm/machine.h"
#include "vmm/net/net.h"

#define GUEST_SIZE (1u << 20)
#define SLOT 4
#define DEVFN (SLOT << 3)
#define MODERN 0xe0000000ull
#define LEGACY 0xc000
#define DESC(q) (0x1000u + (q)*0x8000u)
#define AVAIL(q) (0x5000u + (q)*0x8000u)
#define USED(q) (0x6000u + (q)*0x8000u)
#define DATA_BASE 0x10000u
#define OPS 64

#define FLAG_LEGACY 0x01
#define FLAG_MRG_RXBUF 0x02
#define FLAG_INDIRECT 0x04
#define FLAG_EVENT_IDX 0x08
#define FLAG_MSIX 0x10
#define FLAG_RAW_ADDR 0x80

struct counting_backend {
	struct net_backend be;
	size_t frames, bytes;
};

static void count_send(struct net_backend *be, const void *frame, size_t len)
{
	struct counting_backend *cb = (struct counting_backend *)be;

	/* read every byte, so a bad buffer shows up under ASan */
	for (size_t i = 0; i < len; i++)
		cb->bytes += ((const uint8_t *)frame)[i] & 1;
	cb->frames++;
}

static void count_close(struct net_backend *be)
{
	(void)be;
}

static const struct net_backend_ops count_ops = { .send = count_send,
						  .close = count_close };

static struct vmm *fuzz_vm;

static void fz_mmio_write(uint64_t addr, uint64_t v, unsigned size)
{
	vmm_io_bus_access(&fuzz_vm->mmio, addr, &v, size, true);
}

static void fz_pio_write(uint16_t port, uint32_t v, unsigned size)
{
	vmm_io_bus_access(&fuzz_vm->pio, port, &v, size, true);
}

static void fz_config_write32(unsigned off, uint32_t v)
{
	pci_config_access(fuzz_vm, DEVFN, off, &v, 4, true);
}

static void fz_driver_init(uint8_t flags, unsigned qsize)
{
	uint64_t features = 1ull << 5 | 1ull << 16;

	if (flags & FLAG_MRG_RXBUF)
		features |= 1ull << 15;
	if (flags & FLAG_INDIRECT)
		features |= 1ull << 28;
	if (flags & FLAG_EVENT_IDX)
		features |= 1ull << 29;
	if (flags & FLAG_LEGACY) {
		fz_pio_write(LEGACY + 0x12, 0, 1);
		fz_pio_write(LEGACY + 0x12, 3, 1);
		fz_pio_write(LEGACY + 0x04, (uint32_t)features, 4);
		for (unsigned q = 0; q < 2; q++) {
			fz_pio_write(LEGACY + 0x0e, q, 2);
			fz_pio_write(LEGACY + 0x08, DESC(q) >> 12, 4);
		}
		fz_pio_write(LEGACY + 0x12, 7, 1);
		return;
	}
	features |= 1ull << 32;
	fz_mmio_write(MODERN + 0x14, 0, 1);
	fz_mmio_write(MODERN + 0x14, 3, 1);
	fz_mmio_write(MODERN + 0x08, 0, 4);
	fz_mmio_write(MODERN + 0x0c, (uint32_t)features, 4);
	fz_mmio_write(MODERN + 0x08, 1, 4);
	fz_mmio_write(MODERN + 0x0c, features >> 32, 4);
	fz_mmio_write(MODERN + 0x14, 0x0b, 1);
	for (unsigned q = 0; q < 2; q++) {
		fz_mmio_write(MODERN + 0x16, q, 2);
		fz_mmio_write(MODERN + 0x18, qsize, 2);
		fz_mmio_write(MODERN + 0x20, DESC(q), 4);
		fz_mmio_write(MODERN + 0x28, AVAIL(q), 4);
		fz_mmio_write(MODERN + 0x30, USED(q), 4);
		fz_mmio_write(MODERN + 0x1a, q + 1, 2);
		fz_mmio_write(MODERN + 0x1c, 1, 2);
	}
	fz_mmio_write(MODERN + 0x10, 0, 2);
	fz_mmio_write(MODERN + 0x14, 0x0f, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct counting_backend cb = { .be.ops = &count_ops };
	struct virtio_net *net;
	uint8_t header[8] = { 0 }, *ram;
	static const uint8_t mac[6] = { 0x52, 0x54, 0, 0, 0, 1 };
	unsigned qsize, table_bytes;
	size_t at = 0;
	char err[256];

	fuzz_vm = vmm_create_test(GUEST_SIZE);
	if (!fuzz_vm)
		abort();
	net = virtio_net_create(fuzz_vm, SLOT, mac, false, &cb.be, err,
				sizeof(err));
	if (!net) {
		fprintf(stderr, "fuzz_virtio_net: %s\n", err);
		abort();
	}
	ram = vmm_gpa_to_hva(fuzz_vm, 0, GUEST_SIZE);
	memcpy(header, data, size < 8 ? size : 8);
	at = 8;
	qsize = 1u << (header[1] % 9); /* 1 .. 256 */
	if (header[0] & FLAG_LEGACY)
		qsize = 256; /* the legacy interface cannot change it */
	table_bytes = qsize * 16;

	fz_config_write32(0x10, LEGACY);
	fz_config_write32(0x14, 0xe0004000u);
	fz_config_write32(0x20, (uint32_t)MODERN);
	fz_config_write32(0x04, 0x7);
	if (header[0] & FLAG_MSIX) {
		uint32_t one = 0;

		pci_config_access(fuzz_vm, DEVFN, 0x40, &one, 4, false);
		fz_config_write32(0x40, one | 0x80000000u);
		for (unsigned v = 0; v < 3; v++) {
			fz_mmio_write(0xe0004000u + 16 * v, 0xfee00000u, 4);
			fz_mmio_write(0xe0004000u + 16 * v + 8, 0x30 + v, 4);
			fz_mmio_write(0xe0004000u + 16 * v + 12, v == 2, 4);
		}
	}
	fz_driver_init(header[0], qsize);

	/* descriptor tables and available rings */
	for (unsigned q = 0; q < 2; q++) {
		uint16_t idx = q ? header[2] | header[3] << 8
				 : header[4] | header[5] << 8;
		uint64_t avail = (header[0] & FLAG_LEGACY)
					 ? DESC(q) + table_bytes
					 : AVAIL(q);

		for (unsigned i = 0; i < qsize; i++) {
			uint8_t *d = ram + DESC(q) + 16 * i;
			uint64_t addr;
			uint32_t len;

			if (at + 16 <= size)
				memcpy(d, data + at, 16);
			at += 16;
			memcpy(&addr, d, 8);
			memcpy(&len, d + 8, 4);
			if (!(header[0] & FLAG_RAW_ADDR))
				addr = DATA_BASE +
				       addr % (GUEST_SIZE - DATA_BASE);
			len %= 8192;
			memcpy(d, &addr, 8);
			memcpy(d + 8, &len, 4);
		}
		for (unsigned i = 0; i < qsize; i++) {
			if (at + 2 <= size)
				memcpy(ram + avail + 4 + 2 * i, data + at, 2);
			at += 2;
		}
		memcpy(ram + avail + 2, &idx, 2);
		memcpy(ram + avail + 4 + 2 * qsize, &header[6], 2);
	}
	/* the data area: what is left, repeated */
	{
		size_t ops_end = at + 4 * OPS;

		if (ops_end < size)
			for (size_t i = 0; i < GUEST_SIZE - DATA_BASE; i++)
				ram[DATA_BASE + i] =
					data[ops_end + i % (size - ops_end)];
	}
	for (unsigned op = 0; op < OPS && at + 4 <= size; op++, at += 4) {
		uint8_t kind = data[at] % 7, arg = data[at + 1];
		uint16_t value = data[at + 2] | data[at + 3] << 8;

		switch (kind) {
		case 0: /* transmit kick */
			if (header[0] & FLAG_LEGACY)
				fz_pio_write(LEGACY + 0x10, 1, 2);
			else
				fz_mmio_write(MODERN + VIRTIO_PCI_NOTIFY_OFFSET + 4, 1, 2);
			break;
		case 1: /* receive kick */
			fz_mmio_write(MODERN + VIRTIO_PCI_NOTIFY_OFFSET, 0, 2);
			break;
		case 2: { /* a frame arrives */
			uint8_t frame[2048];
			size_t len = 14 + (value % 1600);

			memset(frame, arg, sizeof(frame));
			cb.be.receive(cb.be.receive_opaque, frame, len);
			break;
		}
		case 3: /* the guest moves its available index */
			memcpy(ram + AVAIL(arg & 1) + 2, &value, 2);
			break;
		case 4: /* a register write anywhere in the modern BAR */
			fz_mmio_write(MODERN + (value % 0x4000), arg * 0x01010101u,
			   1u << (arg & 3) > 8 ? 4 : 1u << (arg & 3));
			break;
		case 5:
			virtio_net_set_link(net, arg & 1);
			break;
		case 6: { /* config space: capabilities, MSI-X control, the
			   * PCI configuration access window */
			uint32_t v = arg * 0x01010101u;

			pci_config_access(fuzz_vm, DEVFN, 0x40 + value % 0xbc,
					  &v, 4, true);
			break;
		}
		}
	}
	virtio_net_destroy(net);
	vmm_destroy(fuzz_vm);
	return 0;
}
