#!/usr/bin/env python3
"""Tests of bench/cuda/resources.py on a fixed cuobjdump -res-usage text (no GPU, no cuobjdump): ctest
bench_resources_parse. The check itself (talkconv.cuda.resources) runs on the built CUDA test binary."""
import io
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stdout
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resources  # noqa: E402

FIXTURE = """
Fatbin elf code:
================
arch = sm_90
Resource usage:
 Common:
  GLOBAL:28 CONSTANT[4]:224
 Function _ZN8talkconv4cuda6detail21backward_fused_kernelI6__halfiLb0EEEvNS1_11window_argsIT_EES6_NS1_12dx_band_argsEl:
  REG:119 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:1112 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _ZN8talkconv4cuda6detail21backward_fused_kernelI6__halflLb1EEEvNS1_11window_argsIT_EES6_NS1_12dx_band_argsEl:
  REG:127 STACK:8 SHARED:1024 LOCAL:0 CONSTANT[0]:1112 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _ZN8talkconv4cuda6detail20shard_lengths_kernelEPKlPlllll:
  REG:9 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _ZN12_GLOBAL__N_111fill_hashedIfEEvPT_mmdd:
  REG:18 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _ZN3cub6detail10radix_sort6kernelIjN8talkconv6detail5valueEEEvv:
  REG:40 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


class Resources(unittest.TestCase):
    def test_keys(self):
        self.assertEqual(resources.kernel_key('void talkconv::cuda::detail::k<float, int, true>(talkconv::x<float>)'),
                         'k<float>')
        self.assertEqual(resources.kernel_key('void talkconv::cuda::detail::k<talkconv::y<float, 2>, int>(int)'),
                         'k<talkconv::y<float, 2>>')
        self.assertEqual(resources.kernel_key('void talkconv::cuda::detail::plain(long const*)'), 'plain')

    def test_parse_and_most(self):
        rows = resources.parse(FIXTURE)
        self.assertEqual(len(rows), 5)
        with mock.patch('subprocess.run') as run:
            run.side_effect = [mock.Mock(returncode=0, stdout=FIXTURE, stderr=''),
                               mock.Mock(stdout='\n'.join([
                                   'void talkconv::cuda::detail::backward_fused_kernel<__half, int, false>(a)',
                                   'void talkconv::cuda::detail::backward_fused_kernel<__half, long, true>(a)',
                                   'void talkconv::cuda::detail::shard_lengths_kernel(long const*)',
                                   'void (anonymous namespace)::fill_hashed<float>(float*)',
                                   'void cub::detail::radix_sort::kernel<unsigned int, talkconv::detail::value>()']))]
            most = resources.usage(['bin'], 'cuobjdump')
        # no test helpers, no CUB kernel instantiated with the library's types
        self.assertEqual(set(most), {'backward_fused_kernel<__half>', 'shard_lengths_kernel'})
        self.assertEqual((most['backward_fused_kernel<__half>']['REG'], most['backward_fused_kernel<__half>']['STACK']),
                         (127, 8))  # the most over the instantiations

    def test_unknown_format_fails(self):
        with self.assertRaises(SystemExit):
            resources.parse(' Function _Z1kv:\n  registers 12\n')

    def test_check_fails_over_budget_and_on_missing_lines(self):
        most = {'a<float>': {'REG': 64, 'STACK': 8, 'SHARED': 1024, 'n': 2},
                'b<float>': {'REG': 32, 'STACK': 0, 'SHARED': 1024, 'n': 1}}
        fd, budget = tempfile.mkstemp(suffix='.txt')
        os.close(fd)
        self.addCleanup(os.remove, budget)

        def check(lines):
            with open(budget, 'w') as f:
                f.write(lines)
            with mock.patch.object(resources, 'find_cuobjdump', return_value='cuobjdump'), \
                    mock.patch.object(resources, 'usage', return_value=most), redirect_stdout(io.StringIO()) as out:
                rc = resources.main([budget, 'bin'])
            return rc, out.getvalue()

        self.assertEqual(check('a<float> 64 8 1024\nb<float> 32 0 1024\n')[0], 0)
        most['c<unsigned int>'] = {'REG': 12, 'STACK': 0, 'SHARED': 1024, 'n': 1}  # a name with a space
        self.assertEqual(check('a<float> 64 8 1024\nb<float> 32 0 1024\nc<unsigned int>   12  0 1024\n')[0], 0)
        self.assertEqual(check('a<float> 64 8 1024\nb<float> 32 0 1024\nc<unsigned int> 11 0 1024\n')[0], 1)
        del most['c<unsigned int>']
        rc, out = check('a<float> 64 0 1024\nb<float> 32 0 1024\n')  # 8 stack bytes over
        self.assertEqual(rc, 1)
        self.assertIn('STACK 8 > 0', out)
        self.assertEqual(check('a<float> 64 8 1024\n')[0], 1)  # b has no line
        self.assertEqual(check('a<float> 64 8 1024\nb<float> 32 0 1024\ngone<float> 1 1 1\n')[0], 1)


if __name__ == '__main__':
    unittest.main()
