"""What training and evaluation both run on: loading a policy, sampling its replies, which prompts can be
answered, the rules of a character card and the style features of a reply.

It sits below both, so a reply is sampled and judged alike when training curates it and when evaluation
measures it; it imports neither of them.
"""
