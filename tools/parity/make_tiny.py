import torch,json,os
from transformers import LlamaConfig as LC,LlamaForCausalLM as LM,Qwen2Config as QC,Qwen2ForCausalLM as QM
o=os.environ.get('OUT','.')
T=[256,72,101,108,108,111,44,32,119,111,114,108,100,33,3,250,17,0,255,128,64,32,99,257]
def run(name,cls,cfg):
  torch.manual_seed(1234);m=cls(cfg).eval()
  try:print(name,m.model.rotary_emb.rope_type,m.model.rotary_emb.inv_freq.tolist())
  except Exception as e:print(name,e)
  with torch.no_grad():
    for n,p in m.named_parameters():
      if 'norm' in n:p.normal_(1,0.2)
      if 'bias' in n:p.normal_(0,0.2)
  d=f'{o}/{name}';m.save_pretrained(d,safe_serialization=True)
  with torch.no_grad():
    L=m(torch.tensor([T])).logits[0].float().contiguous()
    g=m.generate(torch.tensor([T[:8]]),max_new_tokens=8,do_sample=False,pad_token_id=257,eos_token_id=None)[0,8:].tolist()
  L.numpy().astype('<f4').tofile(f'{d}/expected_logits.f32')
  json.dump({'tokens':T,'shape':list(L.shape),'greedy_prompt':T[:8],'greedy_next':g,'torch':torch.__version__},open(f'{d}/expected.json','w'))
c=dict(vocab_size=260,hidden_size=64,intermediate_size=160,num_hidden_layers=2,num_attention_heads=4,num_key_value_heads=2,max_position_embeddings=512,rms_norm_eps=1e-5,initializer_range=0.1,bos_token_id=256,eos_token_id=257)
r=dict(rope_type='llama3',factor=8.0,low_freq_factor=1.0,high_freq_factor=4.0,original_max_position_embeddings=64)
try:lc=LC(**c,rope_theta=1e4,tie_word_embeddings=False,rope_scaling=r)
except Exception as e:print('legacy',e);lc=LC(**c,tie_word_embeddings=False,rope_parameters=dict(r,rope_theta=1e4))
lc._attn_implementation='eager'
run('tiny-llama',LM,lc)
qc=QC(**c,rope_theta=1e6,tie_word_embeddings=True);qc._attn_implementation='eager'
run('tiny-qwen2',QM,qc)
