/* SPDX-License-Identifier: MIT */
/*
 * imgvm machine internals: the I/O bus registry, the KVM core and the
 * constructors of the platform devices.  Devices only need vmm.h; this
 * header is for the machine code (the .c files in vmm/) and the platform devices it
 * wires up.
 */
#ifndef IMGVM_MACHINE_H
#define IMGVM_MACHINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/kvm.h>

#include "vmm/vmm.h"

#define VMM_MAX_CPUS 64
#define VMM_NUM_GSI 24
#define VMM_GIB (1ull << 30)
#define VMM_4GIB (4ull << 30)
/* RAM below 4 GiB ends here at most; the PCI hole, the IOAPIC, the LAPIC
 * and the firmware live above. */
#define VMM_LOW_RAM_MAX (3ull << 30)

/* ---- the I/O bus (vmm/bus.c) -------------------------------------------*/

struct vmm_io_range {
	uint64_t base;
	uint64_t len;
	vmm_io_fn fn;
	void *opaque;
};

struct vmm_io_bus {
	pthread_rwlock_t lock;
	struct vmm_io_range *ranges;
	size_t count;
	size_t capacity;
};

int vmm_io_bus_init(struct vmm_io_bus *bus);
void vmm_io_bus_destroy(struct vmm_io_bus *bus);
int vmm_io_bus_add(struct vmm_io_bus *bus, uint64_t base, uint64_t len,
		   vmm_io_fn fn, void *opaque);
void vmm_io_bus_remove(struct vmm_io_bus *bus, uint64_t base, void *opaque);
/* Returns false when nothing is registered there: reads then see all
 * ones and writes are dropped, as on an empty ISA/PCI bus. */
bool vmm_io_bus_access(struct vmm_io_bus *bus, uint64_t addr, void *data,
		       unsigned size, bool is_write);

/* ---- the machine -------------------------------------------------------*/

enum vmm_request {
	VMM_RUNNING = 0,
	VMM_REQUEST_RESET,
	VMM_REQUEST_POWEROFF,
	VMM_REQUEST_STOP,
};

struct vmm_reset_hook {
	void (*fn)(void *opaque);
	void *opaque;
};

/* A vCPU's registers as KVM left them at one exit (KVM_CAP_SYNC_REGS). */
struct vmm_cpu_snapshot {
	bool valid;
	uint32_t exit_reason;
	uint64_t exits; /* of this vCPU since its start, this one included */
	uint64_t sregs_exit; /* the exit sregs and events were copied at */
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_vcpu_events events;
};

struct vmm_vcpu {
	struct vmm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	/*
	 * KVM copies the registers into run->s.regs at every exit (no
	 * syscall).  At a triple fault kvm_amd has already reset the vCPU, so
	 * KVM_GET_REGS then shows the reset vector: the copy from the exit
	 * before is what tells where the guest was.  The general registers
	 * are copied at every exit; the segment and control registers and
	 * the pending events (more work for KVM) at every sregs_every-th.
	 */
	bool sync_regs;
	unsigned sregs_every;
	uint64_t exits;
	struct vmm_cpu_snapshot prev;
	/* for a timeout's report: inside KVM_RUN or in imgvm's own code,
	 * and when the last exit came (CLOCK_MONOTONIC, ns) */
	int in_run;
	uint64_t last_exit_ns;
};

struct pci_bus;
struct fw_cfg;
struct uart;
struct kvm_coalesced_mmio_ring;

struct vmm {
	/* KVM; vm_fd < 0 in unit tests, where interrupts are only recorded */
	int kvm_fd;
	int vm_fd;
	size_t run_mmap_size;
	bool readonly_mem;

	/* guest RAM: [0, low_ram) and [4 GiB, 4 GiB + high_ram) */
	uint8_t *ram;
	uint64_t ram_size;
	uint64_t low_ram;
	uint64_t high_ram;

	/* firmware image and its copy mapped below 4 GiB */
	uint8_t *bios_image;
	size_t bios_size;
	uint8_t *bios_rom;

	unsigned ncpus;
	struct vmm_vcpu vcpus[VMM_MAX_CPUS];

	struct vmm_io_bus pio;
	struct vmm_io_bus mmio;

	struct vmm_reset_hook *reset_hooks;
	size_t reset_hook_count;

	pthread_mutex_t request_lock;
	pthread_cond_t request_cond;
	enum vmm_request request;
	bool paused; /* vCPUs wait on request_cond while set */
	int exit_code;
	char stop_reason[512];
	unsigned resets;

	/* unit tests: the last level set on each GSI, MSIs sent */
	bool gsi_level[VMM_NUM_GSI];
	unsigned msi_count;
	uint64_t last_msi_address;
	uint32_t last_msi_data;

	struct pci_bus *pci;
	struct fw_cfg *fw_cfg;

	/* 0xA0000-0xBFFFF is left out of the low RAM slot (a VGA's) */
	bool vga_window_open;

	/* device memory regions (framebuffers) as KVM memory slots */
	pthread_mutex_t device_memory_lock;
	struct vmm_device_memory {
		uint64_t gpa, size;
		void *hva;
		bool dirty_log;
		unsigned long *dirty; /* scratch for KVM_GET_DIRTY_LOG */
	} device_memory[VMM_DEVICE_MEMORY_SLOTS];

	/* coalesced port writes: the ranges, and the ring KVM fills */
	struct {
		uint16_t base, len;
	} coalesced[4];
	unsigned coalesced_count;
	struct kvm_coalesced_mmio_ring *ring;
	unsigned ring_entries;
	pthread_mutex_t ring_lock;
};

/* One line for a stop message: where the snapshot's vCPU was (RIP, CS,
 * CR0, CR3, RSP, a pending exception) and which exit that copy is from;
 * says so when there is no copy. */
void vmm_describe_cpu(char *buf, size_t len,
		      const struct vmm_cpu_snapshot *snap);

/* A short line on where a vCPU stood when the run was stopped: its exits,
 * how long before the stop the last one came, that exit's kind and CS:RIP,
 * and whether it was in the guest or in imgvm's device code then. */
void vmm_describe_vcpu_brief(char *buf, size_t len, unsigned index,
			     const struct vmm_cpu_snapshot *snap,
			     uint64_t exits, double idle_sec, bool in_guest);

/* A machine without KVM: RAM, buses, PCI, recorded interrupts.  For unit
 * tests of devices; vmm_destroy frees it. */
struct vmm *vmm_create_test(uint64_t ram_size);

struct vmm_config {
	uint64_t ram_size;
	unsigned ncpus;
	const char *bios_path;
};

/* Opens /dev/kvm, allocates RAM, loads the firmware; errors as one line
 * in err.  Devices are added afterwards, then vmm_run. */
struct vmm *vmm_create(const struct vmm_config *cfg, char *err, size_t errlen);
void vmm_destroy(struct vmm *vm);

/* Runs the guest until power-off or a stop; resets the platform on a
 * guest reboot unless no_reboot (then a reboot ends the run with 0).
 * timeout_sec 0 = none.  Returns the exit status; a reason for a
 * non-zero status is in vm->stop_reason. */
int vmm_run(struct vmm *vm, bool no_reboot, unsigned timeout_sec,
	    void (*on_reboot)(void *opaque), void *opaque);

/* Let KVM queue the guest's writes to these ports instead of exiting for
 * each one (KVM_CAP_COALESCED_PIO); they are handed to the device, in
 * order, before the next exit is handled.  For write-only registers whose
 * effect the guest only observes through a later access (a UART's THR).
 * Reads still exit.  Call before vmm_run. */
int vmm_coalesce_pio(struct vmm *vm, uint16_t base, uint16_t len);

/* Pause (stop running guest code, keep the state) or resume the vCPUs;
 * a stop or reset request still ends a pause. */
void vmm_set_paused(struct vmm *vm, bool paused);
bool vmm_paused(struct vmm *vm);

/* Returns a one-line explanation when this host's KVM cannot run BIOS
 * code (kvm_pvm), NULL when it looks usable. */
const char *vmm_kvm_limitation(void);

/* ---- PCI bus (vmm/pci.c) ---------------------------------------------*/

int pci_bus_create(struct vmm *vm);
void pci_bus_destroy(struct vmm *vm);
/* Register a function (slot, function) on bus 0. */
int pci_register_function(struct vmm *vm, struct pci_device *dev, unsigned slot,
			  unsigned function);
/* Config mechanism #1 access (also used by unit tests). */
void pci_config_access(struct vmm *vm, unsigned devfn, unsigned off, void *data,
		       unsigned size, bool is_write);
/* The PIIX3 PIRQ route registers decide where INTx lands. */
void pci_set_pirq_router(struct vmm *vm, struct pci_device *isa_bridge);

/* ---- platform devices (vmm/devices/) ---------------------------------*/

struct fw_cfg *fw_cfg_create(struct vmm *vm);
void fw_cfg_destroy(struct fw_cfg *fc);
/* Legacy numbered item (signature, RAM size, CPU count, ...). */
int fw_cfg_add_item(struct fw_cfg *fc, uint16_t key, const void *data,
		    size_t len);

struct cmos;
struct cmos *cmos_create(struct vmm *vm);
void cmos_destroy(struct cmos *cmos);
uint8_t cmos_peek(struct cmos *cmos, unsigned index);

/* ---- buffered output (vmm/outbuf.c) ----------------------------------*/

struct outbuf;
/* A writer thread for fd (-1: bytes are dropped). */
struct outbuf *outbuf_create(int fd);
/* Append; waits only while the buffer is full. */
void outbuf_put(struct outbuf *ob, const void *data, size_t len);
void outbuf_set_fd(struct outbuf *ob, int fd);
/* Writes out what is buffered, then frees. */
void outbuf_destroy(struct outbuf *ob);

struct uart;
/* out: where transmitted bytes go (NULL: dropped). */
struct uart *uart_create(struct vmm *vm, uint16_t base, unsigned gsi,
			 struct outbuf *out);
void uart_destroy(struct uart *uart);
/* Feed received bytes; returns how many were taken (the FIFO may be
 * full; then wait for uart_wait_rx_space). */
size_t uart_receive(struct uart *uart, const uint8_t *buf, size_t len);
/* Blocks until the receive FIFO has room or the UART is shut down;
 * returns false after shutdown. */
bool uart_wait_rx_space(struct uart *uart);
void uart_shutdown(struct uart *uart);

/* ---- the serial console (vmm/console.c) --------------------------------*/

struct console;
/* spec: "stdio", "file:PATH" or "unix:PATH".  The UART's output is known
 * before the UART exists; console_attach then starts input. */
struct console *console_open(const char *spec, char *err, size_t errlen);
struct outbuf *console_output(const struct console *con);
int console_attach(struct console *con, struct vmm *vm, struct uart *uart,
		   char *err, size_t errlen);
/* Restores the terminal, writes out pending output.  Returns true when an
 * input thread (stdio, unix) may still touch the UART: it must not be
 * freed then. */
bool console_close(struct console *con);

struct i8042;
struct i8042 *i8042_create(struct vmm *vm);
void i8042_destroy(struct i8042 *kbc);

struct piix;
/* i440FX host bridge (00:00.0), PIIX3 ISA bridge (00:01.0) with the reset
 * control register 0xCF9, PIIX4 power management (00:01.3) with ACPI PM1
 * blocks, PM timer, GPE0 and the APM/SMI command port. */
struct piix *piix_create(struct vmm *vm);
void piix_destroy(struct piix *piix);
/* The ACPI fixed power button: sets PWRBTN_STS (an SCI when the guest
 * enabled PWRBTN_EN).  Returns whether the guest had enabled it. */
bool piix_press_power_button(struct piix *piix);

struct debug_ports;
/* Port 0x80 (POST codes, ignored) and the debug console 0x402 (firmware
 * log to log; NULL: not present). */
struct debug_ports *debug_ports_create(struct vmm *vm, struct outbuf *log);
void debug_ports_destroy(struct debug_ports *dp);

#endif
