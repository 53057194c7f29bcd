"""Where an H200's time goes in a training step: torch.profiler over 5 steps
of the CIFAR bottleneck ResNet-110 (batch 128, float32, eager), plain and
MRLA-L, top CUDA operators and kernels. Needs torch and mmengine only; its
output is ``profile_resnet110_fp32.txt`` beside this file."""
import torch
from torch.profiler import ProfilerActivity, profile
from mmela.models import ELAResNetCIFAR

torch.backends.cudnn.benchmark = True
x = torch.randn(128, 3, 32, 32, device='cuda')
for kind in (None, 'light'):
    torch.manual_seed(0)
    net = ELAResNetCIFAR(110, layer_attention=kind).cuda().train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        net(x)[-1].mean().backward()
        opt.step()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(f'==== layer_attention={kind}')
    print(p.key_averages().table(sort_by='cuda_time_total', row_limit=22,
                                 max_name_column_width=60))
