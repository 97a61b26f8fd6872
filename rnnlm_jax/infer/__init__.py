"""Using a trained model: generating text (`generation`), scoring it (`scoring`) and loading
a language model from its workdir (`load`)."""
