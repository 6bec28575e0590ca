/* Whether /dev/kvm really runs guests.  Opening it is not enough: nested
 * KVM on the development machine opens, creates VMs and even runs a tiny
 * real-mode guest (MMIO write, HLT: the test below passes), yet a real
 * guest under libvirt hangs without a line on its console.  So KVM is used
 * only when the test guest runs AND the host is not itself a guest (the
 * CPUID "hypervisor" flag in /proc/cpuinfo); virt_type = kvm in the
 * configuration overrides this for nested set-ups known to work. */
#include "kvm_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

bool
kvm_probe(const char *dev, char *why, size_t whylen)
{
    int kvm = -1, vm = -1, cpu = -1;
    void *mem = MAP_FAILED, *run = MAP_FAILED;
    size_t run_size = 0;
    bool ok = false;

    kvm = open(dev ? dev : "/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        snprintf(why, whylen, "open %s: %s", dev ? dev : "/dev/kvm", strerror(errno));
        goto out;
    }
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        snprintf(why, whylen, "unexpected KVM API version");
        goto out;
    }
    vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
    if (vm < 0) {
        snprintf(why, whylen, "KVM_CREATE_VM: %s", strerror(errno));
        goto out;
    }
    mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        snprintf(why, whylen, "mmap: %s", strerror(errno));
        goto out;
    }
    /* Real mode: "mov byte [0x3000], 0x42" (MMIO to unbacked memory, which
     * KVM must emulate and hand to user space), then "hlt". */
    static const uint8_t code[] = { 0xc6, 0x06, 0x00, 0x30, 0x42, 0xf4 };
    memcpy(mem, code, sizeof code);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000,
        .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        snprintf(why, whylen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
        goto out;
    }
    cpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
    if (cpu < 0) {
        snprintf(why, whylen, "KVM_CREATE_VCPU: %s", strerror(errno));
        goto out;
    }
    int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0) {
        snprintf(why, whylen, "KVM_GET_VCPU_MMAP_SIZE failed");
        goto out;
    }
    run_size = (size_t)sz;
    run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
    if (run == MAP_FAILED) {
        snprintf(why, whylen, "mmap vcpu: %s", strerror(errno));
        goto out;
    }
    struct kvm_sregs sregs;
    if (ioctl(cpu, KVM_GET_SREGS, &sregs) < 0) {
        snprintf(why, whylen, "KVM_GET_SREGS: %s", strerror(errno));
        goto out;
    }
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(cpu, KVM_SET_SREGS, &sregs) < 0) {
        snprintf(why, whylen, "KVM_SET_SREGS: %s", strerror(errno));
        goto out;
    }
    struct kvm_regs regs = { .rip = 0x1000, .rflags = 0x2 };
    if (ioctl(cpu, KVM_SET_REGS, &regs) < 0) {
        snprintf(why, whylen, "KVM_SET_REGS: %s", strerror(errno));
        goto out;
    }
    if (ioctl(cpu, KVM_RUN, 0) < 0) {
        snprintf(why, whylen, "KVM_RUN: %s", strerror(errno));
        goto out;
    }
    struct kvm_run *kr = run;
    if (kr->exit_reason != KVM_EXIT_MMIO || !kr->mmio.is_write ||
        kr->mmio.phys_addr != 0x3000 || kr->mmio.data[0] != 0x42) {
        snprintf(why, whylen, "test guest's MMIO write was not seen (exit reason %u%s)",
                 kr->exit_reason, kr->exit_reason == KVM_EXIT_INTERNAL_ERROR ?
                 ", internal error: nested KVM?" : "");
        goto out;
    }
    if (ioctl(cpu, KVM_RUN, 0) < 0) {
        snprintf(why, whylen, "KVM_RUN: %s", strerror(errno));
        goto out;
    }
    if (kr->exit_reason != KVM_EXIT_HLT) {
        snprintf(why, whylen, "test guest exited with reason %u, not HLT (nested KVM?)",
                 kr->exit_reason);
        goto out;
    }
    FILE *f = fopen("/proc/cpuinfo", "re");
    if (f) {
        char line[4096];
        bool nested = false;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "flags", 5) && strstr(line, " hypervisor")) {
                nested = true;
                break;
            }
        fclose(f);
        if (nested) {
            snprintf(why, whylen, "this host is itself a virtual machine (nested KVM is unreliable)");
            goto out;
        }
    }
    ok = true;
    snprintf(why, whylen, "KVM runs guests");
out:
    if (run != MAP_FAILED)
        munmap(run, run_size);
    if (cpu >= 0)
        close(cpu);
    if (mem != MAP_FAILED)
        munmap(mem, 0x1000);
    if (vm >= 0)
        close(vm);
    if (kvm >= 0)
        close(kvm);
    return ok;
}
