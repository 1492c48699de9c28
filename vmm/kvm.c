// SPDX-License-Identifier: MIT
/*
 * The KVM core: guest RAM, the firmware mapping, the in-kernel irqchip and
 * PIT, vCPU threads and their exit dispatch, platform reset.
 *
 * A platform reset (guest reboot) throws the KVM VM away and builds a new
 * one over the same RAM: vCPUs, LAPICs, PIC, IOAPIC and PIT come back in
 * their power-on state without us resetting each piece of KVM state by
 * hand; our own devices reset through their vmm_on_reset hooks.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "vmm/machine.h"

/* KVM's real-mode TSS and identity page table (VT-x only); SeaBIOS
 * reserves this range in the e820 map when it sees KVM. */
#define VMM_IDENTITY_MAP_ADDR 0xfeffc000ull
#define VMM_TSS_ADDR 0xfeffd000ull
/* The firmware's last 128 KiB also appear at 0xE0000-0xFFFFF. */
#define VMM_BIOS_LOW_ALIAS 0x20000ull

enum vmm_slot {
	SLOT_LOW_RAM,
	SLOT_HIGH_RAM,
	SLOT_BIOS,
	SLOT_RAM_ABOVE_VGA, /* 0xC0000 up, when the VGA window is open */
	SLOT_DEVICE_FIRST,
};

#define VMM_VGA_WINDOW 0xa0000ull
#define VMM_VGA_WINDOW_END 0xc0000ull

/* ---- guest memory ------------------------------------------------------*/

void *vmm_gpa_to_hva(struct vmm *vm, uint64_t gpa, uint64_t len)
{
	if (gpa + len < gpa)
		return NULL;
	if (gpa + len <= vm->low_ram)
		return vm->ram + gpa;
	if (gpa >= VMM_4GIB && gpa - VMM_4GIB <= vm->high_ram &&
	    len <= vm->high_ram - (gpa - VMM_4GIB))
		return vm->ram + vm->low_ram + (gpa - VMM_4GIB);
	return NULL;
}

uint64_t vmm_ram_size(const struct vmm *vm)
{
	return vm->ram_size;
}

/* ---- interrupts --------------------------------------------------------*/

void vmm_set_irq(struct vmm *vm, unsigned gsi, bool level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = level };

	if (gsi >= VMM_NUM_GSI)
		return;
	vm->gsi_level[gsi] = level;
	if (vm->vm_fd >= 0)
		ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq);
}

void vmm_send_msi(struct vmm *vm, uint64_t address, uint32_t data)
{
	struct kvm_msi msi = {
		.address_lo = (uint32_t)address,
		.address_hi = (uint32_t)(address >> 32),
		.data = data,
	};

	__atomic_add_fetch(&vm->msi_count, 1, __ATOMIC_RELAXED);
	vm->last_msi_address = address;
	vm->last_msi_data = data;
	if (vm->vm_fd >= 0)
		ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi);
}

/* ---- lifecycle requests ------------------------------------------------*/

void vmm_on_reset(struct vmm *vm, void (*fn)(void *opaque), void *opaque)
{
	struct vmm_reset_hook *grown = realloc(
		vm->reset_hooks, (vm->reset_hook_count + 1) * sizeof(*grown));

	/* Registration happens at machine setup; without memory the setup
	 * fails elsewhere soon enough, so a lost hook is only logged. */
	if (!grown) {
		fprintf(stderr, "imgvm: out of memory registering a reset\n");
		return;
	}
	grown[vm->reset_hook_count++] = (struct vmm_reset_hook){ fn, opaque };
	vm->reset_hooks = grown;
}

static void vmm_kick_vcpus(struct vmm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vmm_vcpu *vcpu = &vm->vcpus[i];

		if (!vcpu->started)
			continue;
		__atomic_store_n(&vcpu->run->immediate_exit, 1,
				 __ATOMIC_SEQ_CST);
		if (!pthread_equal(vcpu->thread, pthread_self()))
			pthread_kill(vcpu->thread, SIGUSR1);
	}
}

static void vmm_post_request(struct vmm *vm, enum vmm_request request,
			     int exit_code, const char *reason)
{
	pthread_mutex_lock(&vm->request_lock);
	/* A stop also wins over a reset that is still being carried out:
	 * otherwise a SIGTERM or timeout during the reset would be lost and
	 * the next boot would run on unbounded. */
	if (vm->request == VMM_RUNNING ||
	    (request == VMM_REQUEST_STOP && vm->request == VMM_REQUEST_RESET)) {
		vm->request = request;
		vm->exit_code = exit_code;
		if (reason)
			snprintf(vm->stop_reason, sizeof(vm->stop_reason), "%s",
				 reason);
		pthread_cond_broadcast(&vm->request_cond);
	}
	pthread_mutex_unlock(&vm->request_lock);
	if (vm->vm_fd >= 0)
		vmm_kick_vcpus(vm);
}

void vmm_request_stop(struct vmm *vm, int exit_code, const char *fmt, ...)
{
	char reason[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	vmm_post_request(vm, VMM_REQUEST_STOP, exit_code ? exit_code : 2,
			 reason);
}

void vmm_request_poweroff(struct vmm *vm)
{
	vmm_post_request(vm, VMM_REQUEST_POWEROFF, 0, NULL);
}

void vmm_request_reset(struct vmm *vm)
{
	vmm_post_request(vm, VMM_REQUEST_RESET, 0, NULL);
}

static bool vmm_running(struct vmm *vm)
{
	return __atomic_load_n(&vm->request, __ATOMIC_SEQ_CST) == VMM_RUNNING;
}

void vmm_set_paused(struct vmm *vm, bool paused)
{
	pthread_mutex_lock(&vm->request_lock);
	vm->paused = paused;
	pthread_cond_broadcast(&vm->request_cond);
	pthread_mutex_unlock(&vm->request_lock);
	if (paused && vm->vm_fd >= 0)
		vmm_kick_vcpus(vm);
}

bool vmm_paused(struct vmm *vm)
{
	return __atomic_load_n(&vm->paused, __ATOMIC_SEQ_CST);
}

/* A paused vCPU waits here, outside KVM_RUN, until resumed or stopped. */
static void vmm_wait_while_paused(struct vmm *vm)
{
	if (!vmm_paused(vm))
		return;
	pthread_mutex_lock(&vm->request_lock);
	while (vm->paused && vm->request == VMM_RUNNING)
		pthread_cond_wait(&vm->request_cond, &vm->request_lock);
	pthread_mutex_unlock(&vm->request_lock);
}

/* ---- construction ------------------------------------------------------*/

static int vmm_common_init(struct vmm *vm, uint64_t ram_size)
{
	int ret;

	vm->kvm_fd = -1;
	vm->vm_fd = -1;
	vm->ram_size = ram_size;
	vm->low_ram = ram_size < VMM_LOW_RAM_MAX ? ram_size : VMM_LOW_RAM_MAX;
	vm->high_ram = ram_size - vm->low_ram;
	vm->ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->ram == MAP_FAILED) {
		vm->ram = NULL;
		return -ENOMEM;
	}
	madvise(vm->ram, ram_size, MADV_HUGEPAGE);
	pthread_mutex_init(&vm->request_lock, NULL);
	pthread_mutex_init(&vm->ring_lock, NULL);
	pthread_mutex_init(&vm->device_memory_lock, NULL);
	{
		pthread_condattr_t attr;

		pthread_condattr_init(&attr);
		pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		pthread_cond_init(&vm->request_cond, &attr);
		pthread_condattr_destroy(&attr);
	}
	ret = vmm_io_bus_init(&vm->pio);
	if (ret)
		return ret;
	ret = vmm_io_bus_init(&vm->mmio);
	if (ret)
		return ret;
	return pci_bus_create(vm);
}

struct vmm *vmm_create_test(uint64_t ram_size)
{
	struct vmm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->ncpus = 1;
	if (vmm_common_init(vm, ram_size)) {
		vmm_destroy(vm);
		return NULL;
	}
	return vm;
}

static int vmm_load_bios(struct vmm *vm, const char *path, char *err,
			 size_t errlen)
{
	struct stat st;
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "cannot open firmware %s: %s", path,
			 strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) < 0 || st.st_size < 64 * 1024 ||
	    st.st_size > 16 * 1024 * 1024 || st.st_size % 4096) {
		snprintf(err, errlen,
			 "firmware %s: size must be 64 KiB to 16 MiB in whole "
			 "pages",
			 path);
		close(fd);
		return -EINVAL;
	}
	vm->bios_size = st.st_size;
	vm->bios_image = malloc(vm->bios_size);
	vm->bios_rom = mmap(NULL, vm->bios_size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!vm->bios_image || vm->bios_rom == MAP_FAILED) {
		if (vm->bios_rom == MAP_FAILED)
			vm->bios_rom = NULL;
		snprintf(err, errlen, "out of memory for the firmware");
		close(fd);
		return -ENOMEM;
	}
	got = pread(fd, vm->bios_image, vm->bios_size, 0);
	close(fd);
	if (got != (ssize_t)vm->bios_size) {
		snprintf(err, errlen, "cannot read firmware %s", path);
		return -EIO;
	}
	return 0;
}

const char *vmm_kvm_limitation(void)
{
	if (access("/sys/module/kvm_pvm", F_OK) == 0 &&
	    access("/sys/module/kvm_intel", F_OK) != 0 &&
	    access("/sys/module/kvm_amd", F_OK) != 0)
		return "this host's /dev/kvm is kvm_pvm (no VT-x/AMD-V), which "
		       "cannot run BIOS-era code; run imgvm on hardware KVM or "
		       "inside the nested test host (tests/nested-kvm.sh)";
	return NULL;
}

struct vmm *vmm_create(const struct vmm_config *cfg, char *err, size_t errlen)
{
	struct vmm *vm = calloc(1, sizeof(*vm));
	int api;

	if (!vm) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (cfg->ncpus < 1 || cfg->ncpus > VMM_MAX_CPUS) {
		snprintf(err, errlen, "--cpus must be 1 to %d", VMM_MAX_CPUS);
		goto fail;
	}
	if (cfg->ram_size < 16ull << 20 || cfg->ram_size > 1024 * VMM_GIB ||
	    cfg->ram_size % 4096) {
		snprintf(err, errlen,
			 "--memory must be 16 MiB to 1 TiB in whole pages");
		goto fail;
	}
	vm->ncpus = cfg->ncpus;
	if (vmm_common_init(vm, cfg->ram_size)) {
		snprintf(err, errlen, "cannot allocate %llu MiB of guest RAM",
			 (unsigned long long)(cfg->ram_size >> 20));
		goto fail;
	}
	if (vmm_load_bios(vm, cfg->bios_path, err, errlen))
		goto fail;
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		snprintf(err, errlen, "cannot open /dev/kvm: %s%s",
			 strerror(errno),
			 errno == ENOENT   ? " (load kvm_intel or kvm_amd)"
			 : errno == EACCES ? " (add yourself to the kvm group)"
					   : "");
		goto fail;
	}
	api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		snprintf(err, errlen, "unsupported KVM API version %d", api);
		goto fail;
	}
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) <= 0 ||
	    ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_PIT2) <= 0 ||
	    ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) <=
		    0) {
		snprintf(err, errlen,
			 "KVM lacks the in-kernel irqchip, PIT or immediate "
			 "exit");
		goto fail;
	}
	vm->readonly_mem = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION,
				 KVM_CAP_READONLY_MEM) > 0;
	vm->run_mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if ((ssize_t)vm->run_mmap_size <= 0) {
		snprintf(err, errlen, "KVM_GET_VCPU_MMAP_SIZE failed");
		goto fail;
	}
	return vm;
fail:
	vmm_destroy(vm);
	return NULL;
}

void vmm_destroy(struct vmm *vm)
{
	if (!vm)
		return;
	pci_bus_destroy(vm);
	if (vm->ram)
		munmap(vm->ram, vm->ram_size);
	if (vm->bios_rom)
		munmap(vm->bios_rom, vm->bios_size);
	free(vm->bios_image);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	vmm_io_bus_destroy(&vm->pio);
	vmm_io_bus_destroy(&vm->mmio);
	free(vm->reset_hooks);
	for (unsigned i = 0; i < VMM_DEVICE_MEMORY_SLOTS; i++)
		free(vm->device_memory[i].dirty);
	free(vm);
}

/* ---- coalesced port writes ----------------------------------------------*/

int vmm_coalesce_pio(struct vmm *vm, uint16_t base, uint16_t len)
{
	if (vm->coalesced_count ==
	    sizeof(vm->coalesced) / sizeof(vm->coalesced[0]))
		return -ENOSPC;
	vm->coalesced[vm->coalesced_count].base = base;
	vm->coalesced[vm->coalesced_count].len = len;
	vm->coalesced_count++;
	return 0;
}

/* Hand the queued writes to their devices, oldest first.  Runs before any
 * exit is handled, so the guest never sees a later access overtake them. */
static void vmm_drain_coalesced(struct vmm *vm)
{
	struct kvm_coalesced_mmio_ring *ring = vm->ring;

	if (!ring || __atomic_load_n(&ring->first, __ATOMIC_ACQUIRE) ==
			     __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&vm->ring_lock);
	while (ring->first != __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE)) {
		struct kvm_coalesced_mmio *entry =
			&ring->coalesced_mmio[ring->first % vm->ring_entries];
		unsigned len = entry->len <= 8 ? entry->len : 8;

		vmm_io_bus_access(entry->pio ? &vm->pio : &vm->mmio,
				  entry->phys_addr, entry->data, len, true);
		__atomic_store_n(&ring->first,
				 (ring->first + 1) % vm->ring_entries,
				 __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&vm->ring_lock);
}

/* Register the coalesced ranges with this KVM VM; without the capability
 * (or with IMGVM_NO_COALESCE set) every write simply exits. */
static void vmm_setup_coalesced(struct vmm *vm)
{
	long page = sysconf(_SC_PAGESIZE);
	int offset;

	vm->ring = NULL;
	if (!vm->coalesced_count || getenv("IMGVM_NO_COALESCE") ||
	    ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_PIO) <= 0)
		return;
	offset = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_MMIO);
	if (offset <= 0 || (size_t)(offset + 1) * page > vm->run_mmap_size)
		return;
	for (unsigned i = 0; i < vm->coalesced_count; i++) {
		struct kvm_coalesced_mmio_zone zone = {
			.addr = vm->coalesced[i].base,
			.size = vm->coalesced[i].len,
			.pio = 1,
		};

		if (ioctl(vm->vm_fd, KVM_REGISTER_COALESCED_MMIO, &zone) < 0)
			return;
	}
	vm->ring_entries = (page - sizeof(struct kvm_coalesced_mmio_ring)) /
			   sizeof(struct kvm_coalesced_mmio);
	vm->ring = (struct kvm_coalesced_mmio_ring *)((char *)vm->vcpus[0].run +
						      offset * page);
}

/* ---- one power cycle of the KVM VM -----------------------------------*/

static int vmm_set_memory(struct vmm *vm, enum vmm_slot slot, uint64_t gpa,
			  uint64_t size, void *hva, bool readonly)
{
	struct kvm_userspace_memory_region region = {
		.slot = slot,
		.flags = readonly ? KVM_MEM_READONLY : 0,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)hva,
	};

	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region);
}

static int vmm_set_device_slot(struct vmm *vm, unsigned index)
{
	const struct vmm_device_memory *dm = &vm->device_memory[index];
	struct kvm_userspace_memory_region region = {
		.slot = SLOT_DEVICE_FIRST + index,
		.flags = dm->dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
		.guest_phys_addr = dm->gpa,
		.memory_size = dm->size,
		.userspace_addr = (uint64_t)(uintptr_t)dm->hva,
	};

	return ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0
		       ? -errno
		       : 0;
}

void vmm_open_vga_window(struct vmm *vm)
{
	/* --memory is at least 16 MiB: RAM goes on above the window */
	vm->vga_window_open = true;
}

int vmm_map_device_memory(struct vmm *vm, unsigned index, uint64_t gpa,
			  void *hva, uint64_t size, bool dirty_log)
{
	struct vmm_device_memory *dm;
	int ret = 0;

	if (index >= VMM_DEVICE_MEMORY_SLOTS || size % 4096 || gpa % 4096)
		return -EINVAL;
	dm = &vm->device_memory[index];
	pthread_mutex_lock(&vm->device_memory_lock);
	if (size && dirty_log) {
		free(dm->dirty);
		dm->dirty = calloc(1, (size / 4096 + 63) / 64 * 8);
		if (!dm->dirty) {
			pthread_mutex_unlock(&vm->device_memory_lock);
			return -ENOMEM;
		}
	}
	/* KVM moves a slot only by deleting it first */
	if (dm->size && vm->vm_fd >= 0) {
		dm->size = 0;
		vmm_set_device_slot(vm, index);
	}
	dm->gpa = gpa;
	dm->hva = hva;
	dm->size = size;
	dm->dirty_log = dirty_log;
	if (size && vm->vm_fd >= 0) {
		ret = vmm_set_device_slot(vm, index);
		if (ret)
			dm->size = 0;
	}
	pthread_mutex_unlock(&vm->device_memory_lock);
	return ret;
}

int vmm_device_memory_dirty(struct vmm *vm, unsigned index,
			    unsigned long *bitmap)
{
	struct vmm_device_memory *dm;
	int ret = 0;

	if (index >= VMM_DEVICE_MEMORY_SLOTS)
		return -EINVAL;
	dm = &vm->device_memory[index];
	pthread_mutex_lock(&vm->device_memory_lock);
	if (dm->size && dm->dirty_log && vm->vm_fd >= 0) {
		size_t words = (dm->size / 4096 + 63) / 64;
		struct kvm_dirty_log log = {
			.slot = SLOT_DEVICE_FIRST + index,
			.dirty_bitmap = dm->dirty,
		};

		if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
			ret = -errno;
		} else {
			for (size_t i = 0; i < words; i++)
				bitmap[i] |= dm->dirty[i];
		}
	}
	pthread_mutex_unlock(&vm->device_memory_lock);
	return ret;
}

static struct kvm_cpuid2 *vmm_supported_cpuid(struct vmm *vm)
{
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *cpuid = calloc(
			1, sizeof(*cpuid) + n * sizeof(cpuid->entries[0]));

		if (!cpuid)
			return NULL;
		cpuid->nent = n;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
			return cpuid;
		free(cpuid);
		if (errno != E2BIG)
			return NULL;
	}
	return NULL;
}

#define VMM_SYNC_REGS \
	(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS)

static int vmm_setup_vcpu(struct vmm *vm, unsigned index,
			  const struct kvm_cpuid2 *supported)
{
	struct vmm_vcpu *vcpu = &vm->vcpus[index];
	size_t bytes = sizeof(*supported) +
		       supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *cpuid = malloc(bytes);
	int ret = 0, sync;

	vcpu->vm = vm;
	vcpu->index = index;
	vcpu->exits = 0;
	vcpu->last_exit_ns = 0;
	vcpu->in_run = 0;
	vcpu->sync_regs = false;
	memset(&vcpu->prev, 0, sizeof(vcpu->prev));
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, index);
	if (vcpu->fd < 0 || !cpuid) {
		free(cpuid);
		return -errno;
	}
	vcpu->run = mmap(NULL, vm->run_mmap_size, PROT_READ | PROT_WRITE,
			 MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		free(cpuid);
		return -errno;
	}
	/* KVM_CHECK_EXTENSION answers with the register sets it can copy;
	 * IMGVM_NO_SYNC_REGS=1 does without them, as on a KVM that has none.
	 * IMGVM_SYNC_SREGS_EVERY=N: the segment and control registers at
	 * every N-th exit (default 32; 1 = at each, to measure the cost). */
	sync = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
	if (sync > 0 && (sync & VMM_SYNC_REGS) == VMM_SYNC_REGS &&
	    !getenv("IMGVM_NO_SYNC_REGS")) {
		const char *every = getenv("IMGVM_SYNC_SREGS_EVERY");

		vcpu->sync_regs = true;
		vcpu->sregs_every = every ? (unsigned)atoi(every) : 32;
		if (vcpu->sregs_every < 1)
			vcpu->sregs_every = 1;
	}
	memcpy(cpuid, supported, bytes);
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		switch (e->function) {
		case 1:
			/* initial APIC ID; we run under a hypervisor */
			e->ebx = (e->ebx & 0x00ffffffu) | (index << 24);
			e->ecx |= 1u << 31;
			break;
		case 0xb:
		case 0x1f:
			e->edx = index;
			break;
		}
	}
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0)
		ret = -errno;
	free(cpuid);
	return ret;
}

static void vmm_teardown_kvm(struct vmm *vm)
{
	vmm_drain_coalesced(vm);
	vm->ring = NULL;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vmm_vcpu *vcpu = &vm->vcpus[i];

		if (vcpu->run)
			munmap(vcpu->run, vm->run_mmap_size);
		if (vcpu->fd >= 0)
			close(vcpu->fd);
		vcpu->run = NULL;
		vcpu->fd = -1;
		vcpu->started = false;
	}
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	vm->vm_fd = -1;
}

static void vmm_load_firmware(struct vmm *vm)
{
	uint64_t alias = vm->bios_size < VMM_BIOS_LOW_ALIAS
				 ? vm->bios_size
				 : VMM_BIOS_LOW_ALIAS;

	memcpy(vm->bios_rom, vm->bios_image, vm->bios_size);
	memcpy(vm->ram + 0x100000 - alias,
	       vm->bios_image + vm->bios_size - alias, alias);
}

static int vmm_build_kvm(struct vmm *vm, char *err, size_t errlen)
{
	struct kvm_pit_config pit = { .flags = 0 };
	struct kvm_cpuid2 *cpuid = NULL;
	uint64_t addr;

	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
		goto fail;
	}
	addr = VMM_IDENTITY_MAP_ADDR;
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0 ||
	    ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, VMM_TSS_ADDR) < 0) {
		snprintf(err, errlen, "KVM_SET_TSS_ADDR: %s", strerror(errno));
		goto fail;
	}
	if ((vm->vga_window_open
		     ? vmm_set_memory(vm, SLOT_LOW_RAM, 0, VMM_VGA_WINDOW,
				      vm->ram, false) ||
			       vmm_set_memory(vm, SLOT_RAM_ABOVE_VGA,
					      VMM_VGA_WINDOW_END,
					      vm->low_ram - VMM_VGA_WINDOW_END,
					      vm->ram + VMM_VGA_WINDOW_END,
					      false)
		     : vmm_set_memory(vm, SLOT_LOW_RAM, 0, vm->low_ram, vm->ram,
				      false)) ||
	    (vm->high_ram &&
	     vmm_set_memory(vm, SLOT_HIGH_RAM, VMM_4GIB, vm->high_ram,
			    vm->ram + vm->low_ram, false)) ||
	    vmm_set_memory(vm, SLOT_BIOS, VMM_4GIB - vm->bios_size,
			   vm->bios_size, vm->bios_rom, vm->readonly_mem)) {
		snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s",
			 strerror(errno));
		goto fail;
	}
	/* a framebuffer mapped before a reset stays until its BAR moves */
	pthread_mutex_lock(&vm->device_memory_lock);
	for (unsigned i = 0; i < VMM_DEVICE_MEMORY_SLOTS; i++)
		if (vm->device_memory[i].size && vmm_set_device_slot(vm, i))
			vm->device_memory[i].size = 0;
	pthread_mutex_unlock(&vm->device_memory_lock);
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0 ||
	    ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		snprintf(err, errlen, "KVM irqchip/PIT: %s", strerror(errno));
		goto fail;
	}
	cpuid = vmm_supported_cpuid(vm);
	if (!cpuid) {
		snprintf(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s",
			 strerror(errno));
		goto fail;
	}
	for (unsigned i = 0; i < vm->ncpus; i++) {
		int ret = vmm_setup_vcpu(vm, i, cpuid);

		if (ret) {
			snprintf(err, errlen, "cannot create vCPU %u: %s", i,
				 strerror(-ret));
			goto fail;
		}
	}
	free(cpuid);
	vmm_setup_coalesced(vm);
	return 0;
fail:
	free(cpuid);
	vmm_teardown_kvm(vm);
	return -1;
}

/* ---- vCPU threads ------------------------------------------------------*/

static void vmm_emulation_failure(struct vmm_vcpu *vcpu)
{
	struct vmm *vm = vcpu->vm;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	const char *hint = vmm_kvm_limitation();
	unsigned long long cs = 0, rip = 0;
	char before[400];

	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0 &&
	    ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) == 0) {
		cs = sregs.cs.selector;
		rip = regs.rip;
	}
	vmm_describe_cpu(before, sizeof(before), &vcpu->prev);
	vmm_request_stop(vm, 2,
			 "KVM internal error: emulation failure at "
			 "%04llx:%08llx%s%s; %s",
			 cs, rip, hint ? "; " : "", hint ? hint : "", before);
}

static const char *vmm_exit_name(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_IO:
		return "port I/O";
	case KVM_EXIT_MMIO:
		return "MMIO";
	case KVM_EXIT_HLT:
		return "HLT";
	case KVM_EXIT_INTR:
		return "signal";
	case KVM_EXIT_SHUTDOWN:
		return "shutdown";
	case KVM_EXIT_SYSTEM_EVENT:
		return "system event";
	case KVM_EXIT_INTERNAL_ERROR:
		return "internal error";
	case KVM_EXIT_FAIL_ENTRY:
		return "entry failure";
	default:
		return NULL;
	}
}

void vmm_describe_cpu(char *buf, size_t len,
		      const struct vmm_cpu_snapshot *snap)
{
	const struct kvm_vcpu_events *ev = &snap->events;
	const char *name = vmm_exit_name(snap->exit_reason);
	char exit_name[24];
	char exception[48] = "";
	char sregs_age[40] = "";

	if (!snap->valid) {
		snprintf(buf, len,
			 "no registers from before it (KVM lacks "
			 "KVM_CAP_SYNC_REGS, or the vCPU had not left KVM_RUN "
			 "yet)");
		return;
	}
	if (!name) {
		snprintf(exit_name, sizeof(exit_name), "%u", snap->exit_reason);
		name = exit_name;
	}
	if (snap->sregs_exit != snap->exits)
		snprintf(sregs_age, sizeof(sregs_age), " (at exit %llu)",
			 (unsigned long long)snap->sregs_exit);
	if (ev->exception.injected || ev->exception.pending)
		snprintf(exception, sizeof(exception),
			 ", exception %u%s (error %#x)", ev->exception.nr,
			 ev->exception.injected ? " being delivered"
						: " pending",
			 ev->exception.has_error_code ? ev->exception.error_code
						      : 0);
	snprintf(buf, len,
		 "at its exit before (%s, exit %llu): RIP %#llx RSP %#llx "
		 "RFLAGS %#llx; CS %#x CR0 %#llx CR3 %#llx CR4 %#llx EFER "
		 "%#llx%s%s",
		 name, (unsigned long long)snap->exits,
		 (unsigned long long)snap->regs.rip,
		 (unsigned long long)snap->regs.rsp,
		 (unsigned long long)snap->regs.rflags, snap->sregs.cs.selector,
		 (unsigned long long)snap->sregs.cr0,
		 (unsigned long long)snap->sregs.cr3,
		 (unsigned long long)snap->sregs.cr4,
		 (unsigned long long)snap->sregs.efer, sregs_age, exception);
}

void vmm_describe_vcpu_brief(char *buf, size_t len, unsigned index,
			     const struct vmm_cpu_snapshot *snap,
			     uint64_t exits, double idle_sec, bool in_guest)
{
	const char *name = vmm_exit_name(snap->exit_reason);
	char where[64] = "";

	if (snap->valid)
		snprintf(where, sizeof(where), " (%s at %04x:%llx)",
			 name ? name : "other", snap->sregs.cs.selector,
			 (unsigned long long)snap->regs.rip);
	snprintf(buf, len, "vCPU %u: %llu exits, the last %.1f s before%s, %s",
		 index, (unsigned long long)exits, idle_sec, where,
		 in_guest ? "in the guest" : "in imgvm's device code");
}

static uint64_t vmm_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* At a timeout: where each vCPU stood, appended to the stop reason (one
 * line).  A guest spinning on a device shows recent exits at one place; a
 * vCPU that made no exit for long was left in the guest by KVM. */
static void vmm_describe_timeout(struct vmm *vm)
{
	uint64_t now = vmm_now_ns();
	size_t used = strlen(vm->stop_reason);

	for (unsigned i = 0;
	     i < vm->ncpus && used + 1 < sizeof(vm->stop_reason); i++) {
		struct vmm_vcpu *vcpu = &vm->vcpus[i];
		uint64_t last =
			__atomic_load_n(&vcpu->last_exit_ns, __ATOMIC_RELAXED);
		char brief[160];

		vmm_describe_vcpu_brief(
			brief, sizeof(brief), i, &vcpu->prev,
			__atomic_load_n(&vcpu->exits, __ATOMIC_RELAXED),
			last && now > last ? (double)(now - last) / 1e9 : 0.0,
			__atomic_load_n(&vcpu->in_run, __ATOMIC_RELAXED));
		snprintf(vm->stop_reason + used, sizeof(vm->stop_reason) - used,
			 "; %s", brief);
		used = strlen(vm->stop_reason);
	}
}

/* IMGVM_TRACE_IO=1: every port access on stderr (debugging aid) */
static bool vmm_trace_io;
/* IMGVM_STATS=1: exit counts at the end (what the guest costs us) */
static uint64_t vmm_exit_pio, vmm_exit_mmio, vmm_exit_other;
static uint64_t vmm_exit_port[0x10000 / 8];

static void vmm_handle_exit(struct vmm_vcpu *vcpu)
{
	struct vmm *vm = vcpu->vm;
	struct kvm_run *run = vcpu->run;

	vmm_drain_coalesced(vm);
	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		uint8_t *data = (uint8_t *)run + run->io.data_offset;

		__atomic_add_fetch(&vmm_exit_pio, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&vmm_exit_port[run->io.port / 8], 1,
				   __ATOMIC_RELAXED);
		for (uint32_t i = 0; i < run->io.count; i++) {
			if (vmm_trace_io)
				fprintf(stderr, "pio %s %#x size %u\n",
					run->io.direction == KVM_EXIT_IO_OUT
						? "out"
						: "in",
					run->io.port, run->io.size);
			vmm_io_bus_access(&vm->pio, run->io.port, data,
					  run->io.size,
					  run->io.direction == KVM_EXIT_IO_OUT);
			data += run->io.size;
		}
		break;
	}
	case KVM_EXIT_MMIO:
		__atomic_add_fetch(&vmm_exit_mmio, 1, __ATOMIC_RELAXED);
		if (vmm_trace_io)
			fprintf(stderr, "mmio %s %#llx size %u\n",
				run->mmio.is_write ? "write" : "read",
				(unsigned long long)run->mmio.phys_addr,
				run->mmio.len);
		vmm_io_bus_access(&vm->mmio, run->mmio.phys_addr,
				  run->mmio.data, run->mmio.len,
				  run->mmio.is_write);
		break;
	case KVM_EXIT_INTR:
	case KVM_EXIT_HLT:
		__atomic_add_fetch(&vmm_exit_other, 1, __ATOMIC_RELAXED);
		break;
	case KVM_EXIT_SHUTDOWN: {
		struct kvm_regs regs = { 0 };
		struct kvm_sregs sregs = { 0 };
		char before[400];

		/* kvm_amd has reset the vCPU already: these registers may
		 * be the reset vector's, hence the copy from the exit before */
		ioctl(vcpu->fd, KVM_GET_REGS, &regs);
		ioctl(vcpu->fd, KVM_GET_SREGS, &sregs);
		vmm_describe_cpu(before, sizeof(before), &vcpu->prev);
		vmm_request_stop(vm, 2,
				 "guest triple fault (vCPU %u, now at "
				 "%04x:%08llx); %s",
				 vcpu->index, sregs.cs.selector,
				 (unsigned long long)regs.rip, before);
		break;
	}
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
			vmm_request_reset(vm);
		else
			vmm_request_poweroff(vm);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION)
			vmm_emulation_failure(vcpu);
		else
			vmm_request_stop(vm, 2,
					 "KVM internal error, suberror %u",
					 run->internal.suberror);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		vmm_request_stop(
			vm, 2, "KVM entry failed, hardware reason %#llx",
			(unsigned long long)
				run->fail_entry.hardware_entry_failure_reason);
		break;
	default:
		vmm_request_stop(vm, 2, "unhandled KVM exit %u",
				 run->exit_reason);
		break;
	}
}

/* What KVM is to copy into kvm_run at the coming exit: the general
 * registers always, the rest at every sregs_every-th exit (the first one
 * included). */
static void vmm_choose_registers(struct vmm_vcpu *vcpu)
{
	vcpu->run->kvm_valid_regs =
		KVM_SYNC_X86_REGS |
		(vcpu->exits % vcpu->sregs_every
			 ? 0
			 : KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS);
}

/* The registers KVM copied into kvm_run at this exit, kept for the next
 * exit's report: a memcpy, no syscall. */
static void vmm_keep_registers(struct vmm_vcpu *vcpu)
{
	const struct kvm_sync_regs *s = &vcpu->run->s.regs;

	vcpu->prev.valid = true;
	vcpu->prev.exit_reason = vcpu->run->exit_reason;
	vcpu->prev.exits = vcpu->exits;
	memcpy(&vcpu->prev.regs, &s->regs, sizeof(s->regs));
	if (vcpu->run->kvm_valid_regs & KVM_SYNC_X86_SREGS) {
		vcpu->prev.sregs_exit = vcpu->exits;
		memcpy(&vcpu->prev.sregs, &s->sregs, sizeof(s->sregs));
		memcpy(&vcpu->prev.events, &s->events, sizeof(s->events));
	}
}

static void *vmm_vcpu_thread(void *arg)
{
	struct vmm_vcpu *vcpu = arg;
	struct vmm *vm = vcpu->vm;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	while (vmm_running(vm)) {
		int ret;

		vmm_wait_while_paused(vm);
		if (!vmm_running(vm))
			break;
		if (vcpu->sync_regs)
			vmm_choose_registers(vcpu);
		__atomic_store_n(&vcpu->in_run, 1, __ATOMIC_RELAXED);
		ret = ioctl(vcpu->fd, KVM_RUN, 0);
		__atomic_store_n(&vcpu->in_run, 0, __ATOMIC_RELAXED);
		if (ret < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				__atomic_store_n(&vcpu->run->immediate_exit, 0,
						 __ATOMIC_SEQ_CST);
				continue;
			}
			vmm_request_stop(vm, 2, "KVM_RUN failed: %s",
					 strerror(errno));
			break;
		}
		__atomic_store_n(&vcpu->exits, vcpu->exits + 1,
				 __ATOMIC_RELAXED);
		__atomic_store_n(&vcpu->last_exit_ns, vmm_now_ns(),
				 __ATOMIC_RELAXED);
		vmm_handle_exit(vcpu);
		if (vcpu->sync_regs)
			vmm_keep_registers(vcpu);
	}
	return NULL;
}

static void vmm_kick_signal(int sig)
{
	(void)sig;
}

static int vmm_start_vcpus(struct vmm *vm, char *err, size_t errlen)
{
	sigset_t set, old;

	/* Only vCPU threads take the kick signal. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vmm_vcpu *vcpu = &vm->vcpus[i];
		int ret = pthread_create(&vcpu->thread, NULL, vmm_vcpu_thread,
					 vcpu);

		if (ret) {
			snprintf(err, errlen, "cannot start vCPU thread: %s",
				 strerror(ret));
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			return -ret;
		}
		vcpu->started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return 0;
}

/* Seconds a vCPU thread may take to leave KVM_RUN once told to stop. */
#define VMM_JOIN_GRACE_SEC 10

/*
 * Kick the vCPUs out of KVM_RUN and join them.  The kick is repeated every
 * 200 ms: a signal that arrives just before a thread re-enters KVM_RUN is
 * caught by immediate_exit, but a thread busy in device code when the kick
 * came is only caught by the next one.  A thread that never returns (stuck
 * in a device) must not keep the process alive past --timeout or SIGTERM:
 * after the grace period the VMM says so and exits.
 */
static void vmm_join_vcpus(struct vmm *vm, int status)
{
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct vmm_vcpu *vcpu = &vm->vcpus[i];
		unsigned tries = 0;

		while (vcpu->started) {
			struct timespec t;

			vmm_kick_vcpus(vm);
			clock_gettime(CLOCK_REALTIME, &t);
			t.tv_nsec += 200 * 1000000L;
			t.tv_sec += t.tv_nsec / 1000000000L;
			t.tv_nsec %= 1000000000L;
			if (!pthread_timedjoin_np(vcpu->thread, NULL, &t)) {
				vcpu->started = false;
				break;
			}
			if (++tries < VMM_JOIN_GRACE_SEC * 5)
				continue;
			fprintf(stderr,
				"imgvm: %s (vCPU %u did not stop within %d s; "
				"exiting without flushing)\n",
				vm->stop_reason[0] ? vm->stop_reason
						   : "stopping",
				i, VMM_JOIN_GRACE_SEC);
			_exit(status ? status : 2);
		}
	}
}

static struct timespec timespec_after_ms(long ms)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_nsec += ms * 1000000;
	t.tv_sec += t.tv_nsec / 1000000000;
	t.tv_nsec %= 1000000000;
	return t;
}

static bool timespec_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void vmm_print_stats(void)
{
	fprintf(stderr,
		"imgvm stats: %llu port exits, %llu MMIO exits, %llu "
		"other\n",
		(unsigned long long)vmm_exit_pio,
		(unsigned long long)vmm_exit_mmio,
		(unsigned long long)vmm_exit_other);
	for (unsigned i = 0; i < 0x10000 / 8; i++)
		if (vmm_exit_port[i] > vmm_exit_pio / 100)
			fprintf(stderr, "imgvm stats:   ports %#x-%#x: %llu\n",
				i * 8, i * 8 + 7,
				(unsigned long long)vmm_exit_port[i]);
}

int vmm_run(struct vmm *vm, bool no_reboot, unsigned timeout_sec,
	    void (*on_reboot)(void *opaque), void *opaque)
{
	struct sigaction sa = { .sa_handler = vmm_kick_signal };
	struct timespec deadline;
	char err[256];
	int status;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	vmm_trace_io = getenv("IMGVM_TRACE_IO") != NULL;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_sec;
	for (unsigned i = 0; i < vm->ncpus; i++)
		vm->vcpus[i].fd = -1;

	for (;;) {
		enum vmm_request request;

		if (vmm_build_kvm(vm, err, sizeof(err))) {
			snprintf(vm->stop_reason, sizeof(vm->stop_reason), "%s",
				 err);
			return 1;
		}
		vmm_load_firmware(vm);
		for (size_t i = 0; i < vm->reset_hook_count; i++)
			vm->reset_hooks[i].fn(vm->reset_hooks[i].opaque);
		pthread_mutex_lock(&vm->request_lock);
		/* a stop that came during the reset is kept */
		if (vm->request != VMM_REQUEST_STOP)
			vm->request = VMM_RUNNING;
		request = vm->request;
		pthread_mutex_unlock(&vm->request_lock);
		if (request == VMM_RUNNING &&
		    vmm_start_vcpus(vm, err, sizeof(err))) {
			vmm_post_request(vm, VMM_REQUEST_STOP, 1, err);
		}

		pthread_mutex_lock(&vm->request_lock);
		while (vm->request == VMM_RUNNING) {
			struct timespec until = deadline;
			bool bounded = timeout_sec != 0;

			if (vm->ring) {
				/* a guest that wrote and went idle must not
				 * keep its last bytes queued for long */
				struct timespec tick = timespec_after_ms(50);

				if (!bounded || timespec_before(&tick, &until))
					until = tick;
				bounded = true;
			}
			if (bounded)
				pthread_cond_timedwait(&vm->request_cond,
						       &vm->request_lock,
						       &until);
			else
				pthread_cond_wait(&vm->request_cond,
						  &vm->request_lock);
			if (vm->ring) {
				pthread_mutex_unlock(&vm->request_lock);
				vmm_drain_coalesced(vm);
				pthread_mutex_lock(&vm->request_lock);
			}
			if (vm->request == VMM_RUNNING && timeout_sec) {
				struct timespec now = timespec_after_ms(0);

				if (!timespec_before(&now, &deadline)) {
					vm->request = VMM_REQUEST_STOP;
					vm->exit_code = 124;
					snprintf(
						vm->stop_reason,
						sizeof(vm->stop_reason),
						"timeout: the guest ran for %u s",
						timeout_sec);
					vmm_describe_timeout(vm);
				}
			}
		}
		request = vm->request;
		status = vm->exit_code;
		pthread_mutex_unlock(&vm->request_lock);

		vmm_join_vcpus(vm, status);
		vmm_teardown_kvm(vm);

		if (getenv("IMGVM_STATS") &&
		    (request != VMM_REQUEST_RESET || no_reboot))
			vmm_print_stats();
		if (request == VMM_REQUEST_POWEROFF)
			return 0;
		if (request == VMM_REQUEST_STOP)
			return status ? status : 2;
		/* guest reboot */
		if (no_reboot)
			return 0;
		vm->resets++;
		if (on_reboot)
			on_reboot(opaque);
	}
}
